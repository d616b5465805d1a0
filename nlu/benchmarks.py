"""Benchmark data and metrics for ``python -m nlu.evaluate``.

Loads FAQ sets in the LocalgovFAQ format (corpus, queries, graded qrels),
CLINC150 as an FAQ, and the demo paraphrases into one shape, and scores
rankings, decisions and the top score's precision–coverage against graded
relevance (grade >= 1 is relevant).
"""
from __future__ import annotations

import json
import math
import random
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from config.settings import PROJECT_ROOT
from nlu.decision import ANSWER, CLARIFY, lead as lead_of
from nlu.retrieval import answer_head
from nlu.text import detect_language, normalize

DEMO_QUERIES = PROJECT_ROOT / "benchmarks" / "demo_paraphrases.yaml"
DATA_DIR = PROJECT_ROOT.parent / "shared" / "datasets"
CLINC_FILE = Path("oos") / "clinc150-dev.json"
_QUESTION_ANSWER = re.compile(r"\s*Question:\s*(?P<question>.*?)\n\s*Answer:\s*(?P<answer>.*)", re.S)
_CATEGORY_TAG = re.compile(r"^(【[^】]*】\s*)+")  # LocalgovFAQ questions start with one: residents type none
OUTSIDE_SAMPLE = 300  # of the LocalgovFAQ corpus questions, asked of our FAQ as out-of-scope ones


@dataclass(frozen=True)
class Query:
    """One question; its qrels grade the entries that answer it."""

    text: str
    lang: str
    qrels: dict = field(default_factory=dict)  # entry id -> grade; empty for out-of-scope questions


@dataclass(frozen=True)
class Corpus:
    """What an index is built from: a BM25 document, the question phrasings and the answer head of each entry."""

    ids: list
    documents: list
    phrasings: list
    lang: str
    heads: list = field(default_factory=list)  # "" for an entry without one; empty: none at all
    answers: list = field(default_factory=list)  # one per entry; empty: the corpus has none


@dataclass
class Benchmark:
    """A set to run: in-scope questions, out-of-scope questions, and the corpus to index."""

    name: str
    queries: list
    oos: list
    corpus: Corpus | None = None  # None: the demo FAQ, indexed by build_nlu

    def limited(self, limit: int | None) -> "Benchmark":
        """The first ``limit`` in-scope and out-of-scope questions, for quick runs."""
        if not limit:
            return self
        return Benchmark(self.name, self.queries[:limit], self.oos[:limit], self.corpus)


def read_json(path: Path):
    """The datasets are UTF-8 JSON whatever the locale says."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def split_entry(value) -> tuple[str, str]:
    """Entries come as {question, answer} or as one "Question: …\\nAnswer: …" text."""
    if isinstance(value, dict):
        return str(value.get("question", "")).strip(), str(value.get("answer", "")).strip()
    match = _QUESTION_ANSWER.match(value)
    return (match["question"].strip(), match["answer"].strip()) if match else (value.strip(), "")


def corpus_from_entries(entries: dict, lang: str, answer_chars: int = 0) -> Corpus:
    """BM25 reads question + answer; the phrasing is the question and, as the bot builds it, the head is the
    question with the first ``answer_chars`` characters of its answer."""
    ids, documents, phrasings, heads, answers = [], [], [], [], []
    for entry_id, value in entries.items():
        question, answer = split_entry(value)
        ids.append(str(entry_id))
        documents.append(f"{question}\n{answer}".strip())
        phrasings.append([question or answer])
        heads.append(answer_head(question, answer, answer_chars) if question else "")
        answers.append(answer)
    return Corpus(ids, documents, phrasings, lang, heads, answers)


def corpus_language(entries: dict) -> str:
    """The language most of a corpus's questions are written in (``text.detect_language``), so an FAQ set runs
    without being told: an English FAQ that names a Japanese place stays English."""
    votes = [detect_language(split_entry(value)[0]) for value in entries.values()]
    return max(("ja", "en"), key=votes.count)


def load_faq_set(name: str, corpus: Path, queries: Path, qrels: Path, lang: str,
                 answer_chars: int = 0, oos_texts=()) -> Benchmark:
    """Any FAQ set in the LocalgovFAQ format; queries with no relevant entry cannot be scored and are dropped."""
    grades = read_json(qrels)
    scored = [
        Query(text, lang, {str(doc): int(grade) for doc, grade in grades.get(str(qid), {}).items()})
        for qid, text in read_json(queries).items()
    ]
    kept = [q for q in scored if any(grade >= 1 for grade in q.qrels.values())]
    oos = [Query(text, lang) for text in oos_texts]
    return Benchmark(name, kept, oos, corpus_from_entries(read_json(corpus), lang, answer_chars))


def clinc_oos_texts(data_dir: Path) -> list[str]:
    """CLINC150's out-of-scope validation questions (English, about anything but an FAQ)."""
    return [text for text, _ in read_json(data_dir / CLINC_FILE)["oos_val"]]


def load_clinc(path: Path, per_intent: int = 10, seed: int = 0) -> Benchmark:
    """CLINC150 as an FAQ: one entry per intent, phrased by a fixed sample of its train utterances."""
    data = read_json(path)
    by_intent = defaultdict(list)
    for text, intent in data["train"]:
        by_intent[intent].append(text)
    rng = random.Random(seed)
    ids = sorted(by_intent)
    phrasings = [rng.sample(by_intent[i], min(per_intent, len(by_intent[i]))) for i in ids]
    corpus = Corpus(ids, [" ".join(texts) for texts in phrasings], phrasings, "en")
    queries = [Query(text, "en", {intent: 1}) for text, intent in data["val"]]
    return Benchmark("clinc-oos", queries, [Query(text, "en") for text, _ in data["oos_val"]], corpus)


def city_questions(data_dir: Path) -> tuple[list[str], list[str]]:
    """Another city's FAQ questions (the LocalgovFAQ corpus's entries, never its queries; category tags
    removed), as (the fixed sample of ``OUTSIDE_SAMPLE`` the demo set asks as out-of-scope, the rest); the rest
    is what ``nlu.evaluate --outside`` was measured with.  Empty where the corpus is missing."""
    corpus = Path(data_dir) / "faq" / "localgov" / "corpus.json"
    if not corpus.exists():
        return [], []
    questions = sorted({_CATEGORY_TAG.sub("", split_entry(v)[0]).strip() for v in read_json(corpus).values()})
    asked = random.Random(0).sample(questions, OUTSIDE_SAMPLE)
    return asked, sorted(set(questions) - set(asked))


def extra_out_of_scope(data_dir: Path) -> list[Query]:
    """What a city's residents ask its account besides our FAQ's topic (QR-code contact tracing), as
    out-of-scope questions: ``city_questions``' sample (Japanese) and CLINC150's ``oos_train`` (English; JHU's
    out-of-scope set is ``oos_val``).  Empty where the shared datasets are missing.

    The paraphrase YAML's 25 a language were too few and too far from city matters: with them the bot answered
    4 % of out-of-scope Japanese questions, but 9 % of 300 LocalgovFAQ questions ("I lost my health insurance
    card", "where do I ask about nursing care") got an answer from the tracing FAQ (2026-11-26)."""
    clinc = Path(data_dir) / CLINC_FILE
    out = [Query(text, "ja") for text in city_questions(data_dir)[0]]
    if clinc.exists():
        out += [Query(text, "en") for text, _ in read_json(clinc)["oos_train"]]
    return out


def load_demo(path: Path = DEMO_QUERIES, data_dir: Path | None = DATA_DIR) -> Benchmark:
    """Our own paraphrase set (or a labelled export in its format, ``bot.labelled``) against ``faq_data``: one
    right entry per question, plus the out-of-scope questions it lists and, unless ``data_dir`` is None,
    ``extra_out_of_scope``."""
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    queries = [Query(q["text"], q["lang"], {q["faq"]: 1}) for q in data["queries"]]
    oos = [Query(text, lang) for lang, texts in data.get("out_of_scope", {}).items() for text in texts]
    return Benchmark("demo", queries, oos + (extra_out_of_scope(data_dir) if data_dir else []))


def load_set(name: str, data_dir: Path, answer_chars: int = 0) -> Benchmark:
    """The named public sets, read in place from the shared datasets folder."""
    faq = Path(data_dir) / "faq"
    if name == "localgov":
        folder = faq / "localgov"
        return load_faq_set(name, folder / "corpus.json", folder / "queries-dev.json",
                            folder / "qrels-dev.json", "ja", answer_chars)
    if name == "jhu":
        folder = faq / "jhu-covid"
        return load_faq_set(name, folder / "corpus.json", folder / "queries.json", folder / "qrels.json",
                            "en", answer_chars, clinc_oos_texts(Path(data_dir)))
    if name == "clinc-oos":
        return load_clinc(Path(data_dir) / CLINC_FILE)
    if name == "demo":
        return load_demo(data_dir=data_dir)
    raise ValueError(f"unknown set {name!r}")


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
