"""Alternate phrasings accepted by operators, kept in Redis until merged into the FAQ files, and questions
they marked as not the FAQ's business ("outside" questions, ``NLU_OUTSIDE_FILE``).

Redis, not a file, because web and worker may run on different machines;
the worker folds these into the FAQ it serves (``Nlu(overlay=…)``) and the
console exports them: alternates as a patch to ``faq_data/``, outside
questions as lines to add to the outside file.
"""
from __future__ import annotations

import json

_KEY, _VERSION, _OUTSIDE = "faq:overlay", "faq:overlay:version", "faq:overlay:outside"


class FaqOverlay:
    def __init__(self, redis):
        self.redis = redis

    def add(self, faq_id: str, lang: str, text: str) -> None:
        field = f"{faq_id}|{lang}"
        texts = json.loads(self.redis.hget(_KEY, field) or "[]")
        if text not in texts:
            pipe = self.redis.pipeline()
            pipe.hset(_KEY, field, json.dumps(texts + [text], ensure_ascii=False))
            pipe.incr(_VERSION)
            pipe.execute()

    def add_outside(self, texts) -> None:
        """Questions the FAQ does not answer: the worker stops answering what is nearer them than any entry."""
        texts = [text for text in texts if text.strip()]
        if texts:
            pipe = self.redis.pipeline()
            pipe.sadd(_OUTSIDE, *texts)
            pipe.incr(_VERSION)
            pipe.execute()

    def snapshot(self) -> tuple[int, dict, tuple]:
        """(version, {(faq id, lang): [texts]}, outside questions) — what ``Nlu`` asks for on each heartbeat."""
        pipe = self.redis.pipeline()
        pipe.get(_VERSION)
        pipe.hgetall(_KEY)
        pipe.smembers(_OUTSIDE)
        version, raw, outside = pipe.execute()
        extra = {tuple(k.decode().split("|", 1)): json.loads(v) for k, v in raw.items()}
        return int(version or 0), extra, tuple(sorted(text.decode() for text in outside))

    def clear(self) -> None:
        """Once the patch is applied to ``faq_data/`` and the outside questions are in their file, the overlay
        only repeats them: an operator clears it from the console."""
        pipe = self.redis.pipeline()
        pipe.delete(_KEY, _OUTSIDE)
        pipe.incr(_VERSION)
        pipe.execute()
