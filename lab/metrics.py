"""Scoring for ``python -m lab.evaluate``: rankings, decisions and the top score's precision–coverage against
graded relevance (grade >= 1 is relevant), paired intervals, and where a set's own labels cap what any system
can reach."""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from lab.datasets import Benchmark
from nlu.decision import ANSWER, CLARIFY, lead as lead_of
from nlu.text import normalize

def relevant(qrels: dict, entry_id) -> bool:
    """Grade 1 (partly answers) counts as right, as in the LocalgovFAQ evaluation."""
    return qrels.get(entry_id, 0) >= 1


def right_choice(qrels: dict, candidate) -> bool:
    """A choice the pipeline offers (or answers with) is right when any entry folded into it is: they give the
    resident one and the same answer text (``decision.one_per_answer``)."""
    return any(relevant(qrels, faq_id) for faq_id in (candidate.faq_id, *candidate.twins))


def ndcg_at(ranked: list, qrels: dict, k: int = 10) -> float:
    """Graded gains (gain = grade), log2 discount, normalised by the ideal order of the qrels."""
    dcg = sum(qrels.get(doc, 0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sum(g / math.log2(i + 2) for i, g in enumerate(sorted(qrels.values(), reverse=True)[:k]))
    return dcg / ideal if ideal > 0 else 0.0


def recall_at(ranked: list, qrels: dict, k: int) -> float:
    """Share of the relevant entries found in the top k."""
    wanted = {doc for doc in qrels if relevant(qrels, doc)}
    return len(wanted.intersection(ranked[:k])) / len(wanted) if wanted else 0.0


def reciprocal_rank(ranked: list, qrels: dict, k: int = 10) -> float:
    """1 / rank of the first relevant entry in the top k: how far a resident must read."""
    return next((1 / (i + 1) for i, doc in enumerate(ranked[:k]) if relevant(qrels, doc)), 0.0)


def precision_at_1(ranked: list, qrels: dict) -> float:
    """Whether the entry the bot would answer with is relevant."""
    return float(bool(ranked) and relevant(qrels, ranked[0]))


PER_QUERY = {
    "ndcg@10": ndcg_at, "p@1": precision_at_1, "recall@3": lambda r, q: recall_at(r, q, 3),
    "recall@10": lambda r, q: recall_at(r, q, 10), "mrr@10": reciprocal_rank,
}


def per_query_metrics(rankings: list, qrels_list: list) -> dict:
    """Each metric's value for each query, in order (what ``paired_gain`` compares)."""
    return {name: np.array([f(r, q) for r, q in zip(rankings, qrels_list)], dtype=float)
            for name, f in PER_QUERY.items()}


def rank_metrics(rankings: list, qrels_list: list) -> dict:
    """Means over queries; Recall@3 is what a "did you mean" menu offers."""
    return {name: float(values.mean()) if len(values) else 0.0
            for name, values in per_query_metrics(rankings, qrels_list).items()}


def paired_gain(new: np.ndarray, old: np.ndarray, draws: int = 2000, seed: int = 0) -> dict:
    """Mean of ``new - old`` over the same queries, with a 95 % paired-bootstrap interval.

    Two methods ranked on one set differ on a few questions only, so whether a gain of a point or two is real
    depends on how many questions moved: an interval that includes 0 says the set cannot tell them apart.
    """
    diff = np.asarray(new, dtype=float) - np.asarray(old, dtype=float)
    if not len(diff):
        return {"mean": 0.0, "ci95": [0.0, 0.0], "better": 0, "worse": 0}
    rows = np.random.default_rng(seed).integers(0, len(diff), size=(draws, len(diff)))
    low, high = np.percentile(diff[rows].mean(axis=1), [2.5, 97.5])
    return {"mean": float(diff.mean()), "ci95": [float(low), float(high)],
            "better": int((diff > 0).sum()), "worse": int((diff < 0).sum())}


@dataclass
class Scored:
    """Per question: the top two scores, the top's lead over the shortlist (``nlu.decision.lead``), whether the
    top one / any of the top three / of the next three is right, its language (each language has its own
    thresholds) and the best score of a question the FAQ does not answer (``Decision.outside``)."""

    top: np.ndarray
    second: np.ndarray
    lead: np.ndarray
    right_first: np.ndarray
    right_offered: np.ndarray
    right_next: np.ndarray
    lang: np.ndarray
    outside: np.ndarray

    @classmethod
    def from_decisions(cls, decisions, qrels_list=None) -> "Scored":
        """``qrels_list`` None: out-of-scope questions, where nothing is right."""
        def score(d, i):
            return d.candidates[i].score if len(d.candidates) > i else -np.inf

        qrels_list = qrels_list or [{}] * len(decisions)
        first = [bool(d.candidates) and right_choice(q, d.candidates[0]) for d, q in zip(decisions, qrels_list)]
        offered = [any(right_choice(q, c) for c in d.candidates[:3]) for d, q in zip(decisions, qrels_list)]
        after = [any(right_choice(q, c) for c in d.candidates[3:6]) for d, q in zip(decisions, qrels_list)]
        return cls(np.array([score(d, 0) for d in decisions], dtype=float),
                   np.array([score(d, 1) for d in decisions], dtype=float),
                   np.array([lead_of(c.score for c in d.candidates) for d in decisions], dtype=float),
                   np.array(first, dtype=bool),
                   np.array(offered, dtype=bool), np.array(after, dtype=bool),
                   np.array([d.lang for d in decisions], dtype=object),
                   np.array([d.outside for d in decisions], dtype=float))

    def part(self, rows) -> "Scored":
        return Scored(**{name: values[rows] for name, values in vars(self).items()})

    def answered(self, answer: float, margin: float, lead: float) -> np.ndarray:
        """``Policy.decide``'s answer rule (clarify <= answer, so an answered question is never below it)."""
        with np.errstate(invalid="ignore"):  # no candidates: -inf - -inf is nan, and nan >= margin is False
            return ((self.top >= answer) & (self.top - self.second >= margin) & (self.lead >= lead)
                    & (self.top > self.outside))


def outcome_shares(scored: Scored, answered, clarified, oos_answered, oos_clarified) -> dict:
    """Shares of in-scope questions answered right/wrong, clarified with/without a right choice, fallen back
    (one each); then the ways back the dialogue offers: answered wrong with a right entry among the runners-up
    a 👎 shows, and clarified without a right choice but with one among the next three "none of these" shows;
    and of out-of-scope questions answered / clarified (None, not 0, when the set has none: nothing was
    measured).  The masks say what the policy did with each question."""
    n = max(len(scored.top), 1)
    shares = {"answered_correct": (answered & scored.right_first).sum() / n,
              "answered_wrong": (answered & ~scored.right_first).sum() / n,
              "clarified_with_right_choice": (clarified & scored.right_offered).sum() / n,
              "clarified_without": (clarified & ~scored.right_offered).sum() / n,
              "fallback": (~answered & ~clarified).sum() / n,
              "answered_wrong_right_runner_up": (answered & ~scored.right_first & scored.right_offered).sum() / n,
              "clarified_without_right_next": (clarified & ~scored.right_offered & scored.right_next).sum() / n}
    shares["oos_answered"] = oos_answered.mean() if len(oos_answered) else None
    shares["oos_clarified"] = oos_clarified.mean() if len(oos_clarified) else None
    return {k: None if v is None else float(v) for k, v in shares.items()}


def question_outcomes(decisions: list, qrels_list: list | None = None) -> list[str]:
    """The key of ``outcome_shares`` each question counts under, right and offered as ``Scored`` has them;
    ``qrels_list`` None: out-of-scope questions, as oos_answered / oos_clarified / oos_fallback."""
    if qrels_list is None:
        return [{ANSWER: "oos_answered", CLARIFY: "oos_clarified"}.get(d.kind, "oos_fallback") for d in decisions]
    scored = Scored.from_decisions(decisions, qrels_list)
    outcomes = []
    for decision, first, offered in zip(decisions, scored.right_first, scored.right_offered):
        if decision.kind == ANSWER:
            outcomes.append("answered_correct" if first else "answered_wrong")
        elif decision.kind == CLARIFY:
            outcomes.append("clarified_with_right_choice" if offered else "clarified_without")
        else:
            outcomes.append("fallback")
    return outcomes


def policy_outcomes(decisions: list, qrels_list: list, oos_decisions: list) -> dict:
    """``outcome_shares`` of the decisions the pipeline made."""
    def kinds(ds, kind):
        return np.array([d.kind == kind for d in ds], dtype=bool)

    return outcome_shares(Scored.from_decisions(decisions, qrels_list), kinds(decisions, ANSWER),
                          kinds(decisions, CLARIFY), kinds(oos_decisions, ANSWER), kinds(oos_decisions, CLARIFY))


def precision_coverage(scores, correct, oos_scores=(), thresholds=None) -> list[dict]:
    """Per threshold t on the top score: share answered, share right among those, share of OOS let through."""
    scores, correct = np.asarray(scores, dtype=float), np.asarray(correct, dtype=bool)
    oos = np.asarray(oos_scores, dtype=float)
    if thresholds is None:
        thresholds = np.unique(np.concatenate([scores, oos]))
    points = []
    for t in thresholds:
        covered = scores >= t
        points.append({
            "threshold": float(t),
            "coverage": float(covered.mean()) if len(scores) else 0.0,
            "precision": float(correct[covered].mean()) if covered.any() else None,
            "oos_accepted": float((oos >= t).mean()) if len(oos) else None,
        })
    return points


def top_scores(decisions: list) -> list[float]:
    """The score the policy thresholds; -inf when nothing was retrieved."""
    return [d.top.score if d.top else float("-inf") for d in decisions]


def read_alike(text: str) -> str:
    """The question with width, case, spaces and punctuation set aside: "What is a coronavirus?" and "what is a
    coronavirus" are one question to any system."""
    return "".join(ch for ch in normalize(text) if ch.isalnum())


def alike_groups(queries: list) -> dict:
    """``read_alike`` text -> the right entries of each question that reads so, one set per question."""
    groups = defaultdict(list)
    for query in queries:
        groups[read_alike(query.text)].append({entry for entry in query.qrels if relevant(query.qrels, entry)})
    return groups


def labelled_apart(group: list) -> bool:
    """Questions that read alike but whose labels share no right entry: whatever a system answers, some count
    it wrong."""
    return len(group) > 1 and not set.intersection(*group)


def asked_alike_labelled_apart(queries: list) -> list[bool]:
    """Per question: whether it reads alike another question whose labels share no right entry with its own
    (``labelled_apart``).  Where two rankers differ on such questions, the labels, not the ranking, decide which
    scores: compare them on the others."""
    apart = {text for text, group in alike_groups(queries).items() if labelled_apart(group)}
    return [bool(query.qrels) and read_alike(query.text) in apart for query in queries]


def label_ceiling(queries: list) -> dict:
    """The best P@1 any system can reach on these labels, since it answers questions that read alike alike.

    A set may label one question with different entries in different rows (JHU: "What is a coronavirus" is
    labelled "What is COVID-19?" once and "What is a coronavirus?" elsewhere); for each group of questions that
    read alike, the best a single entry does is be right for as many of them as it can.  Also: how many such
    groups are ``labelled_apart``, and how many questions they hold."""
    groups = alike_groups(queries).values()
    best = sum(max((sum(entry in rights for rights in group) for entry in set().union(*group)), default=0)
               for group in groups)
    split = [group for group in groups if labelled_apart(group)]
    return {"p@1": best / max(len(queries), 1), "split_texts": len(split),
            "split_questions": sum(len(group) for group in split)}


def p1_by_language(benchmark: Benchmark, rankings: list) -> dict:
    """P@1 per language: the demo set mixes Japanese and English, and one may lag."""
    languages = sorted({q.lang for q in benchmark.queries})
    return {lang: rank_metrics([r for r, q in zip(rankings, benchmark.queries) if q.lang == lang],
                               [q.qrels for q in benchmark.queries if q.lang == lang])["p@1"] for lang in languages}


def pipeline_curve(benchmark: Benchmark, decisions: list, oos_decisions: list) -> list[dict]:
    """Precision–coverage of the pipeline's top score, on a 0.001 grid of the observed scores."""
    correct = [bool(d.top) and right_choice(q.qrels, d.top) for d, q in zip(decisions, benchmark.queries)]
    scores, oos_scores = top_scores(decisions), top_scores(oos_decisions)
    grid = np.unique(np.round([s for s in scores + oos_scores if np.isfinite(s)], 3))
    return precision_coverage(scores, correct, oos_scores, grid)
