"""Re-rank retrieval candidates with the entailment cross-encoder.

Retrieval is cheap and finds the right entry among its top 10 far more often
than at rank 1; the cross-encoder reads the resident's question together
with each candidate's phrasings and decides which one *means* the same.
The cross-encoder is trained listwise (softmax over a retrieval-shaped list),
so its logits only mean something relative to each other: they are turned into
a distribution over the K candidates (softmax), and the final score is
``weight * softmax(ce) + (1 - weight) * retrieval``.  The weight is chosen on
held-out *training* lists and stored in the model's ``config.json``.
"""
from __future__ import annotations

import time

import numpy as np

from nlu.crossencoder import CrossEncoder
from nlu.decision import Candidate

DEFAULT_WEIGHT = 0.5


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max()) if len(logits) else logits
    return z / z.sum() if len(logits) else z


def mix(ce_logits: np.ndarray, retrieval: np.ndarray, weight: float) -> np.ndarray:
    """``weight * softmax(ce_logits) + (1 - weight) * retrieval`` over one query's candidates."""
    return weight * softmax(np.asarray(ce_logits, dtype=np.float64)) + (1 - weight) * np.asarray(retrieval)


class CrossEncoderReranker:
    """``rerank(text, candidates, index)`` as ``nlu.engine.Nlu`` expects it."""

    def __init__(self, model: CrossEncoder, weight: float = DEFAULT_WEIGHT, batch_size: int = 32):
        self.model = model
        self.weight = weight
        self.batch_size = batch_size

    def entry_scores(self, text: str, faq_ids: list[str], index) -> np.ndarray:
        """Per entry, the best cross-encoder logit over its phrasings (one batched call)."""
        pairs, owner = [], []
        for row, faq_id in enumerate(faq_ids):
            for phrasing in index.phrasings[faq_id]:
                pairs.append((text, phrasing))
                owner.append(row)
        best = np.full(len(faq_ids), -np.inf, dtype=np.float32)
        if pairs:
            np.maximum.at(best, np.asarray(owner), self.model.score(pairs, self.batch_size))
        return best

    def rerank(self, text: str, candidates, index) -> list[Candidate]:
        """Candidates re-scored and re-sorted; retrieval numbers stay in ``parts``."""
        ce = softmax(self.entry_scores(text, [c.faq_id for c in candidates], index).astype(np.float64))
        rescored = [
            Candidate(c.faq_id, float(self.weight * p + (1 - self.weight) * c.score),
                      {**c.parts, "retrieval": round(c.score, 4), "ce": round(float(p), 4)})
            for c, p in zip(candidates, ce)
        ]
        return sorted(rescored, key=lambda c: -c.score)


def load_reranker(model_dir, settings, weight: float | None = None) -> CrossEncoderReranker:
    """Load the weights once per process, on the NLU's thread budget; the weight defaults to the tuned one."""
    model = CrossEncoder.load(model_dir, threads=settings.nlu_threads)
    return CrossEncoderReranker(model, model.config.get("mix_weight", DEFAULT_WEIGHT) if weight is None else weight)


def rank_quality(rankings: list[list[str]], gold: list[set]) -> dict:
    """P@1 and MRR@10 when any of several entries counts as right."""
    ranks = [next((r for r, faq_id in enumerate(ranking[:10]) if faq_id in g), None)
             for ranking, g in zip(rankings, gold)]
    n = max(len(gold), 1)
    return {"p@1": round(sum(r == 0 for r in ranks) / n, 4),
            "mrr@10": round(sum(1 / (r + 1) for r in ranks if r is not None) / n, 4)}


def compare(retriever, reranker: CrossEncoderReranker, queries, weights=(DEFAULT_WEIGHT,), k: int = 10) -> dict:
    """Hybrid vs hybrid+CE (``mix``) for (text, lang, gold ids) queries, at several weights (1.0 = CE alone),
    plus CE latency."""
    hybrid, mixed, spent = [], {w: [] for w in weights}, 0.0
    for text, lang, _ in queries:
        candidates = retriever.search(text, lang, k)
        hybrid.append([c.faq_id for c in candidates])
        started = time.perf_counter()
        ce = reranker.entry_scores(text, hybrid[-1], retriever.indexes[lang])
        spent += time.perf_counter() - started
        retrieval = np.array([c.score for c in candidates])
        for w in weights:
            order = np.argsort(-mix(ce, retrieval, w), kind="stable")
            mixed[w].append([hybrid[-1][i] for i in order])
    gold = [set(g) for _, _, g in queries]
    out = {"queries": len(queries), "hybrid": rank_quality(hybrid, gold),
           "ce_ms_per_query": round(1000 * spent / max(len(queries), 1), 1)}
    out.update({f"hybrid+ce@{w}": rank_quality(r, gold) for w, r in mixed.items()})
    return out
