"""Re-rank retrieval candidates with the entailment cross-encoder.

Retrieval is cheap and finds the right entry among its top 10 far more often
than at rank 1; the cross-encoder reads the resident's question together
with each candidate's phrasings and corrects the retrieval score:
``score = retrieval + weight * logit / base_scale``.  It was trained that way
(listwise softmax over ``base_scale * cosine + logit``), so it only has to
learn where retrieval goes wrong, and the score stays in retrieval's units:
the policy's absolute thresholds keep their meaning.  ``base_scale`` is fitted
before training; ``weight`` is chosen on held-out *training* lists; both are
stored in the model's ``config.json``.
"""
from __future__ import annotations

import time

import numpy as np

from nlu.crossencoder import CrossEncoder
from nlu.decision import Candidate


def corrected(retrieval, logits, base_scale: float, weight: float) -> np.ndarray:
    """Retrieval scores plus the weighted cross-encoder correction, in retrieval's units."""
    return np.asarray(retrieval, dtype=np.float64) + weight * np.asarray(logits, dtype=np.float64) / base_scale


class CrossEncoderReranker:
    """``rerank(text, candidates, index)`` as ``nlu.engine.Nlu`` expects it."""

    def __init__(self, model: CrossEncoder, weight: float | None = None, depth: int = 10):
        self.model = model
        self.depth = depth  # how many of the retrieved candidates it reads: its cost grows with this
        self.base_scale = float(model.config.get("base_scale", 100.0))
        self.weight = float(model.config.get("weight", 1.0) if weight is None else weight)

    def entry_scores(self, text: str, candidates, index) -> np.ndarray:
        """Per candidate, the best logit over its entry's questions and alternates (one batched call).  Reading
        only the phrasing retrieval found nearest was measured worse (demo P@1 .49 vs .52 at weight 0.5).  The
        answer head is left out: training lists hold questions only, and reading the long heads too cost three
        times as much and ranked no better (JHU P@1 .670 vs .673 at weight .25, 2026-11-26)."""
        pairs, owner = [], []
        for row, c in enumerate(candidates):
            for phrasing in index.questions[c.faq_id]:
                pairs.append((text, phrasing))
                owner.append(row)
        best = np.full(len(candidates), -np.inf, dtype=np.float32)
        if pairs:
            np.maximum.at(best, np.asarray(owner), self.model.score(pairs))
        return best

    def rerank(self, text: str, candidates, index) -> list[Candidate]:
        """The first ``depth`` candidates re-scored and re-sorted (retrieval numbers stay in ``parts``), the rest
        after them as retrieval ranked them."""
        candidates, rest = list(candidates[: self.depth]), list(candidates[self.depth :])
        logits = self.entry_scores(text, candidates, index)
        scores = corrected([c.score for c in candidates], logits, self.base_scale, self.weight)
        rescored = [
            Candidate(c.faq_id, float(s), {**c.parts, "retrieval": round(c.score, 4), "ce": round(float(g), 3)})
            for c, s, g in zip(candidates, scores, logits)
        ]
        return sorted(rescored, key=lambda c: -c.score) + rest


def load_reranker(model_dir, settings, weight: float | None = None) -> CrossEncoderReranker:
    """Load the weights once per process, on the NLU's thread budget; the weight defaults to the tuned one."""
    return CrossEncoderReranker(CrossEncoder.load(model_dir, threads=settings.nlu_threads), weight,
                                settings.nlu_rerank_depth)


def rank_quality(rankings: list[list[str]], gold: list[set]) -> dict:
    """P@1 and MRR@10 when any of several entries counts as right."""
    ranks = [next((r for r, faq_id in enumerate(ranking[:10]) if faq_id in g), None)
             for ranking, g in zip(rankings, gold)]
    n = max(len(gold), 1)
    return {"p@1": round(sum(r == 0 for r in ranks) / n, 4),
            "mrr@10": round(sum(1 / (r + 1) for r in ranks if r is not None) / n, 4)}


def compare(retriever, reranker: CrossEncoderReranker, queries, weights=(1.0,), k: int = 10) -> dict:
    """Hybrid vs hybrid+CE (``corrected`` over the first ``reranker.depth``) for (text, lang, gold ids) queries
    at several weights, plus CE latency."""
    hybrid, mixed, spent = [], {w: [] for w in weights}, 0.0
    for text, lang, _ in queries:
        candidates = retriever.search(text, lang, k)
        hybrid.append([c.faq_id for c in candidates])
        head = hybrid[-1][: reranker.depth]
        started = time.perf_counter()
        ce = reranker.entry_scores(text, candidates[: reranker.depth], retriever.indexes[lang])
        spent += time.perf_counter() - started
        retrieval = np.array([c.score for c in candidates[: len(head)]])
        for w in weights:
            order = np.argsort(-corrected(retrieval, ce, reranker.base_scale, w), kind="stable")
            mixed[w].append([head[i] for i in order] + hybrid[-1][len(head) :])
    gold = [set(g) for _, _, g in queries]
    out = {"queries": len(queries), "depth": reranker.depth, "hybrid": rank_quality(hybrid, gold),
           "ce_ms_per_query": round(1000 * spent / max(len(queries), 1), 1)}
    out.update({f"hybrid+ce@{w}": rank_quality(r, gold) for w, r in mixed.items()})
    return out
