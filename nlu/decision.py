"""What the NLU hands the dialogue: ranked candidates and a decision.

Plain types only, so ``bot/`` never depends on how scores were made.  A
re-ranker (the entailment cross-encoder) is any object with
``rerank(text, candidates, index) -> candidates``: it reads each candidate's
phrasings from ``index.phrasings[faq_id]``, replaces ``score`` and keeps the
retrieval scores beside it in ``parts``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

ANSWER, CLARIFY, FALLBACK = "answer", "clarify", "fallback"


@dataclass(frozen=True)
class Candidate:
    faq_id: str
    score: float
    parts: dict = field(default_factory=dict)  # e.g. {"bm25": …, "dense": …}


@dataclass(frozen=True)
class Decision:
    kind: str  # ANSWER, CLARIFY or FALLBACK
    lang: str
    candidates: tuple[Candidate, ...]
    latency_ms: float = 0.0

    @property
    def top(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None


@dataclass(frozen=True)
class Policy:
    """Answer when the best score is high and clearly ahead; clarify when it is plausible."""

    answer_threshold: float
    answer_margin: float
    clarify_threshold: float
    clarify_count: int = 3

    def decide(self, candidates) -> str:
        if not candidates or candidates[0].score < self.clarify_threshold:
            return FALLBACK
        runner_up = candidates[1].score if len(candidates) > 1 else float("-inf")
        if candidates[0].score >= self.answer_threshold and candidates[0].score - runner_up >= self.answer_margin:
            return ANSWER
        return CLARIFY
