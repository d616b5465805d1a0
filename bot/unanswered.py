"""Questions the bot could not answer well, kept for operators to improve the FAQ.

The worker adds each question that fell back, was only clarified, or got 👎,
with the NLU's top suggestions and the question's embedding (so the console
can group near-duplicates without loading the model).
"""
from __future__ import annotations

import base64
import json
import time
import uuid

import numpy as np

_KEY, _ORDER = "unanswered:items", "unanswered:order"  # hash id -> item; sorted set id -> time
MAX_ITEMS = 5000
_INT8 = "i8:"


def pack(vector) -> str:
    """A direction is all the grouping needs: one signed byte a dimension, scaled to the largest (cosines within
    .001 of the floats')."""
    vector = np.asarray(vector, dtype=np.float32)
    scaled = np.round(vector * (127 / (np.abs(vector).max() or 1.0)))
    return _INT8 + base64.b64encode(scaled.astype(np.int8).tobytes()).decode()


def unpack(packed: str) -> np.ndarray:
    if packed.startswith(_INT8):
        return np.frombuffer(base64.b64decode(packed.removeprefix(_INT8)), dtype=np.int8).astype(np.float32)
    return np.frombuffer(base64.b64decode(packed), dtype=np.float16).astype(np.float32)  # kept before 2026-12-02


class Unanswered:
    def __init__(self, redis, retention_days: int = 30):
        self.redis = redis
        self.retention_ms = retention_days * 86400 * 1000

    def add(self, platform: str, user_id: str, text: str, lang: str, reason: str, suggestions, vector) -> str:
        """``suggestions``: FAQ ids, best first (the console shows their questions as the FAQ has them then);
        ``vector``: the question's embedding."""
        now_ns = time.time_ns()
        item_id = f"{now_ns:016x}{uuid.uuid4().hex[:6]}"  # sorts by time, so ties in the ms score trim the oldest
        item = {"id": item_id, "ts": now_ns // 1_000_000, "platform": platform, "user": user_id, "text": text,
                "lang": lang, "reason": reason, "suggestions": list(suggestions), "vector": pack(vector)}
        pipe = self.redis.pipeline()
        pipe.hset(_KEY, item_id, json.dumps(item, ensure_ascii=False))
        pipe.zadd(_ORDER, {item_id: item["ts"]})
        pipe.execute()
        self._trim(item["ts"])
        return item_id

    def _trim(self, now_ms: int) -> None:
        """Residents' questions are kept no longer than the conversation log, and never without bound."""
        expired = self.redis.zrangebyscore(_ORDER, 0, now_ms - self.retention_ms)
        surplus = self.redis.zrange(_ORDER, 0, -MAX_ITEMS - 1)
        self.remove([i.decode() for i in set(expired) | set(surplus)])

    def items(self) -> list[dict]:
        """Newest first."""
        items = [json.loads(raw) for raw in self.redis.hvals(_KEY)]
        return sorted(items, key=lambda item: (item["ts"], item["id"]), reverse=True)

    def remove(self, item_ids) -> None:
        item_ids = [i for i in item_ids if i]
        if item_ids:
            self.redis.pipeline().hdel(_KEY, *item_ids).zrem(_ORDER, *item_ids).execute()
