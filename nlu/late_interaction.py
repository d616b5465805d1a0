"""Late interaction: re-score the best retrieved entries by how well each word of the question is matched.

One pooled vector per text blurs a question into a point, so an entry that shares its topic but not its ask
("get tested" vs "test positive") can sit as close as the right one.  Comparing token states instead (MaxSim:
each question token takes its best match among the phrasing's tokens, averaged over the question) keeps the
parts apart.  English only by default (``NLU_LATE_INTERACTION_{LANG}``): in Japanese it lowered LocalgovFAQ
with the stock model's states (P@1 .579 -> .571 at weight .2) and with the tuned Japanese encoder's (.587 ->
.563, 95 % interval -.045 to -.005), while demo Japanese gained .740 -> .760.

``score = retrieval + weight * (maxsim - maxsim of retrieval's top)``: retrieval's top keeps its score and the
others move around it.  An entry that matches worse word by word falls further behind, so the margin the policy
reads says more: calibrated on half of JHU, the other half was answered right .405 (wrong .117) against .356
(.115) with retrieval's scores alone.  Scores move differently than Japanese ones, which is why each language
has its own thresholds.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from nlu.decision import Candidate


class LateInteraction:
    """``rerank(text, candidates, index)`` as ``nlu.engine`` expects of a re-ranker."""

    def __init__(self, encoders: dict, weights: dict, depth: int = 10, cached_texts: int = 4096):
        """``encoders``, ``weights``: {language: tuned encoder}, {language: weight}, for the languages it
        re-scores; any other is left as retrieval ranked it."""
        self.encoders, self.weights, self.depth, self.cached_texts = encoders, weights, depth, cached_texts
        # FAQ phrasings recur in every question's candidates: each is encoded once (JHU: 26 tokens, 19 KB on
        # average, so a full cache holds about 80 MB)
        self.phrasing_states = lru_cache(maxsize=cached_texts)(self._states)

    def _states(self, lang: str, text: str) -> np.ndarray:
        return self.encoders[lang].token_states(text)

    def warm(self, retriever) -> int:
        """Encode the FAQ's phrasings now (as many as the cache holds), so the first questions after a start do
        not wait for their candidates' states: ~10 ms a phrasing, up to a second a question on a large FAQ.
        Returns how many texts it encoded."""
        texts = list(dict.fromkeys(
            (lang, text) for lang, index in retriever.indexes.items() if lang in self.encoders
            for phrasings in index.phrasings.values() for text in phrasings))[: self.cached_texts]
        for lang, text in texts:
            self.phrasing_states(lang, text)
        return len(texts)

    def maxsim(self, question: np.ndarray, lang: str, phrasing: str) -> float:
        """Mean over the question's tokens of their best cosine with a token of ``phrasing``."""
        states = self.phrasing_states(lang, phrasing)
        return float((question @ states.T).max(axis=1).mean()) if len(question) and len(states) else 0.0

    def rerank(self, text: str, candidates, index) -> list[Candidate]:
        """The first ``depth`` candidates re-scored by their entry's best phrasing and re-sorted, the rest after
        them; a language the encoder does not serve is left as retrieval ranked it."""
        lang = index.lang
        if lang not in self.encoders:
            return list(candidates)
        head, rest = list(candidates[: self.depth]), list(candidates[self.depth :])
        question = self.encoders[lang].token_states(text).astype(np.float32)
        matches = [max(self.maxsim(question, lang, phrasing) for phrasing in index.phrasings[c.faq_id]) for c in head]
        rescored = [
            Candidate(c.faq_id, c.score + self.weights[lang] * (m - matches[0]),
                      {**c.parts, "retrieval": round(c.score, 4), "maxsim": round(m, 4)})
            for c, m in zip(head, matches)
        ]
        return sorted(rescored, key=lambda c: -c.score) + rest
