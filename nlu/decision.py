"""What the NLU hands the dialogue: ranked candidates and a decision.

Plain types only, so ``bot/`` never depends on how scores were made.  A
re-ranker (the entailment cross-encoder) is any object with
``rerank(text, candidates, index) -> candidates``: it reads each candidate's
texts from ``index.phrasings[faq_id]`` (``index.questions``: without the
answer head), replaces ``score`` and keeps the
retrieval scores beside it in ``parts``; one with per-phrasing work to cache may
also have ``warm(retriever)``, which the worker calls once its index is built.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

ANSWER, CLARIFY, FALLBACK = "answer", "clarify", "fallback"


@dataclass(frozen=True)
class Candidate:
    faq_id: str
    score: float
    parts: dict = field(default_factory=dict)  # e.g. {"bm25": …, "dense": …}
    twins: tuple[str, ...] = ()  # lower-ranked entries with the same answer, folded into this one


def one_per_answer(candidates, answer_of: dict) -> list[Candidate]:
    """Fold each candidate into the best-ranked one whose answer is the same (``answer_of``: entry id -> its
    answer's key, for entries that share an answer with another).

    Two entries can carry one answer ("moving into the city" and "moving out" both answer with the same
    procedure).  For the resident they are one choice: a "did you mean…" list that offers both wastes a slot
    and leads twice to the same text, and a margin measured between them says nothing, so the policy would
    hesitate where any choice is right.  Folded, the runner-up the policy compares with is the best *other*
    answer.
    """
    kept: dict = {}
    for candidate in candidates:
        key = answer_of.get(candidate.faq_id, candidate.faq_id)
        if key in kept:
            kept[key] = replace(kept[key], twins=(*kept[key].twins, candidate.faq_id))
        else:
            kept[key] = candidate
    return list(kept.values())


@dataclass(frozen=True)
class Decision:
    kind: str  # ANSWER, CLARIFY or FALLBACK
    lang: str
    candidates: tuple[Candidate, ...]
    latency_ms: float = 0.0
    outside: float = float("-inf")  # the best score of a question the FAQ does not answer (``Policy.decide``)
    intent: str = ""  # a conversational intent (``nlu.intents``) that takes the message instead of the FAQ

    @property
    def top(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    @property
    def ranked_ids(self) -> list[str]:
        """Every ranked entry, each answer's twins right after it: the ranking the benchmarks score."""
        return [faq_id for c in self.candidates for faq_id in (c.faq_id, *c.twins)]


def lead(scores) -> float:
    """How far the best score stands above the mean of the other candidates' (infinite with none to compare, as
    the margin is).

    A score alone means different things on different FAQs: on a FAQ about one topic (68 COVID entries) every
    entry scores high for every question, so a high top score says little; what says more is how far the best
    stands out of its shortlist.  Answered right at most 10 % wrongly, each set fitted alone, with the lead
    beside score and margin: JHU .359 -> .409, LocalgovFAQ .331 -> .387 (at most 5 % wrong: .198 -> .284 and
    .253 -> .299); demo and CLINC unchanged.
    """
    scores = list(scores)
    return scores[0] - sum(scores[1:]) / (len(scores) - 1) if len(scores) > 1 else float("inf")


@dataclass(frozen=True)
class Policy:
    """Answer when the best score is high, clearly ahead of the runner-up, standing out of the shortlist
    (``lead``) and above every question the FAQ does not answer (``outside``: the best score among them, on the
    same scale; see ``NLU_OUTSIDE_FILE``); clarify when it is plausible."""

    answer_threshold: float
    answer_margin: float
    answer_lead: float
    clarify_threshold: float
    clarify_count: int = 3
    intent_threshold: float = float("inf")  # ``takes_intent``; none by default

    def takes_intent(self, best_entry: float, intent_score: float) -> bool:
        """A conversational intent takes the message only when its phrasing is near and nearer than the best
        entry (``best_entry``: its score, -inf with none): "thank you for the QR poster, how do I print another?"
        is a question about posters."""
        return intent_score >= self.intent_threshold and intent_score > best_entry

    def decide(self, candidates, outside: float = float("-inf")) -> str:
        if not candidates or candidates[0].score < self.clarify_threshold:
            return FALLBACK
        scores = [c.score for c in candidates]
        runner_up = scores[1] if len(scores) > 1 else float("-inf")
        if (scores[0] >= self.answer_threshold and scores[0] - runner_up >= self.answer_margin
                and lead(scores) >= self.answer_lead and scores[0] > outside):
            return ANSWER
        return CLARIFY
