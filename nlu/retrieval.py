"""Hybrid retrieval: BM25 over words fused with multilingual-e5 embeddings.

BM25 catches the exact terms residents use ("QR", "メール"); the embeddings
catch paraphrases.  Each language has its own index so an answer is always
found in the language the resident wrote in.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import bm25s
import numpy as np

from nlu.decision import Candidate
from nlu.faq import LANGUAGES, Faq
from nlu.text import terms

logging.getLogger("bm25s").setLevel(logging.WARNING)  # it logs every index build at DEBUG


@dataclass(frozen=True)
class Fusion:
    """fused = dense + bm25_weight * s / (s + bm25_saturation): absolute, so thresholds mean something."""

    bm25_weight: float = 0.08
    bm25_saturation: float = 4.0

    def __call__(self, dense: np.ndarray, bm25: np.ndarray) -> np.ndarray:
        return dense + self.bm25_weight * bm25 / (bm25 + self.bm25_saturation)


class _LanguageIndex:
    """One language: a BM25 index of entries and e5 vectors of every phrasing."""

    def __init__(self, faq: Faq, lang: str, embedder):
        self.ids = [entry.id for entry in faq.entries]
        documents = [" ".join((*e.text(lang).phrasings, e.text(lang).answer)) for e in faq.entries]
        self.bm25 = bm25s.BM25()
        self.bm25.index([terms(doc, lang) or ["-"] for doc in documents], show_progress=False)
        phrasings = [(row, text) for row, e in enumerate(faq.entries) for text in e.text(lang).phrasings]
        self.phrasing_entry = np.array([row for row, _ in phrasings])
        # Questions are compared with questions, so both sides get the "query:" prefix.
        self.phrasing_vectors = np.asarray(embedder.query([text for _, text in phrasings]))

    def scores(self, text: str, lang: str, query_vector: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per entry: best cosine over its phrasings, and the BM25 score."""
        similarities = self.phrasing_vectors @ query_vector
        dense = np.full(len(self.ids), -1.0, dtype=np.float32)
        np.maximum.at(dense, self.phrasing_entry, similarities)
        words = terms(text, lang)
        bm25 = self.bm25.get_scores(words) if words else np.zeros(len(self.ids), dtype=np.float32)
        return dense, np.asarray(bm25, dtype=np.float32)


class HybridRetriever:
    """Ranks FAQ entries for a question; built once per FAQ version."""

    def __init__(self, faq: Faq, embedder, fusion: Fusion = Fusion()):
        self.embedder = embedder
        self.fusion = fusion
        self.indexes = {lang: _LanguageIndex(faq, lang, embedder) for lang in LANGUAGES}

    def scores(self, text: str, lang: str) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Entry ids with their dense and BM25 scores (the evaluation ranks by each)."""
        index = self.indexes[lang]
        dense, bm25 = index.scores(text, lang, np.asarray(self.embedder.query(text)))
        return index.ids, dense, bm25

    def search(self, text: str, lang: str, k: int) -> list[Candidate]:
        ids, dense, bm25 = self.scores(text, lang)
        fused = self.fusion(dense, bm25)
        order = np.argsort(-fused, kind="stable")[:k]
        return [
            Candidate(
                faq_id=ids[i],
                score=float(fused[i]),
                parts={"dense": round(float(dense[i]), 4), "bm25": round(float(bm25[i]), 4)},
            )
            for i in order
        ]
