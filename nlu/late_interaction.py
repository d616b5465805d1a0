"""Late interaction: re-order the best retrieved entries by how well each word of the question is matched.

One pooled vector per text blurs a question into a point, so an entry that shares its topic but not its ask
("get tested" vs "test positive") can sit as close as the right one.  Comparing token states instead (MaxSim:
each question token takes its best match among the phrasing's tokens, averaged over the question) keeps the
parts apart.  Only in the tuned encoder's languages, with its states: the stock model's states lowered
LocalgovFAQ (P@1 .579 -> .571 at weight .2).

It changes the order only: candidates are sorted by ``retrieval + weight * maxsim`` and then take retrieval's
scores in rank order, so the top score and the margin the policy reads are retrieval's, and thresholds
calibrated for retrieval keep their meaning in every language.  Letting MaxSim move the scores widened English
margins (JHU answered wrongly .061 -> .115 at the shipped thresholds), and one set of thresholds serves both
languages.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from nlu.decision import Candidate


class LateInteraction:
    """``rerank(text, candidates, index)`` as ``nlu.engine`` expects of a re-ranker."""

    def __init__(self, encoder, weight: float, depth: int = 10, cached_texts: int = 4096):
        self.encoder, self.weight, self.depth = encoder, weight, depth
        # FAQ phrasings recur in every question's candidates: each is encoded once (about 30 KB apiece)
        self.phrasing_states = lru_cache(maxsize=cached_texts)(encoder.token_states)

    def maxsim(self, question: np.ndarray, phrasing: str) -> float:
        """Mean over the question's tokens of their best cosine with a token of ``phrasing``."""
        states = self.phrasing_states(phrasing)
        return float((question @ states.T).max(axis=1).mean()) if len(question) and len(states) else 0.0

    def rerank(self, text: str, candidates, index) -> list[Candidate]:
        """The first ``depth`` candidates re-ordered by their entry's best phrasing, the rest after them; a
        language the encoder does not serve is left as retrieval ranked it."""
        if index.lang not in self.encoder.languages:
            return list(candidates)
        head, rest = list(candidates[: self.depth]), list(candidates[self.depth :])
        question = self.encoder.token_states(text).astype(np.float32)
        matches = [max(self.maxsim(question, phrasing) for phrasing in index.phrasings[c.faq_id]) for c in head]
        order = sorted(range(len(head)), key=lambda i: -(head[i].score + self.weight * matches[i]))
        return [
            Candidate(head[i].faq_id, head[rank].score,
                      {**head[i].parts, "retrieval": round(head[i].score, 4), "maxsim": round(matches[i], 4)})
            for rank, i in enumerate(order)
        ] + rest
