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

_KEY = "unanswered:items"


def pack(vector) -> str:
    return base64.b64encode(np.asarray(vector, dtype=np.float16).tobytes()).decode()


def unpack(packed: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(packed), dtype=np.float16).astype(np.float32)


class Unanswered:
    def __init__(self, redis):
        self.redis = redis

    def add(self, platform: str, user_id: str, text: str, lang: str, reason: str, suggestions, vector) -> str:
        """``suggestions``: [(faq id, question)] best first; ``vector``: the question's embedding."""
        item_id = uuid.uuid4().hex[:12]
        item = {"id": item_id, "ts": int(time.time() * 1000), "platform": platform, "user": user_id, "text": text,
                "lang": lang, "reason": reason, "suggestions": [list(s) for s in suggestions], "vector": pack(vector)}
        self.redis.hset(_KEY, item_id, json.dumps(item, ensure_ascii=False))
        return item_id

    def items(self) -> list[dict]:
        """Newest first."""
        items = [json.loads(raw) for raw in self.redis.hvals(_KEY)]
        return sorted(items, key=lambda item: -item["ts"])

    def remove(self, item_ids) -> None:
        if item_ids:
            self.redis.hdel(_KEY, *item_ids)
