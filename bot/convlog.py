"""The conversation log operators read: Redis Streams, capped and expiring.

Each turn goes to the conversation's own stream and to one global stream.
Residents' phone numbers and e-mail addresses are redacted before storing
(unless ``LOG_REDACT=false``); the application log never gets message text.
"""
from __future__ import annotations

import re
import time

GLOBAL_STREAM = "log:all"
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<!\d)(?:[+＋]?\d[\d\-－‐ ]{8,14}\d)(?!\d)")


def redact(text: str) -> str:
    """Hide e-mail addresses and phone numbers (Japanese and international forms)."""
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub(lambda m: "[phone]" if sum(c.isdigit() for c in m.group()) >= 10 else m.group(), text)


def stream_key(platform: str, user_id: str) -> str:
    return f"log:conv:{platform}:{user_id}"


class ConversationLog:
    def __init__(self, redis, retention_days: int, conversation_maxlen: int, global_maxlen: int, redact_text: bool):
        self.redis = redis
        self.retention_s = retention_days * 86400
        self.conversation_maxlen = conversation_maxlen
        self.global_maxlen = global_maxlen
        self.redact_text = redact_text

    def append(self, platform: str, user_id: str, direction: str, text: str = "", **details) -> None:
        """Record one turn; ``details`` are decision, faq_id, score, latency_ms, send_result…"""
        now_ms = int(time.time() * 1000)
        fields = {
            "ts": now_ms,
            "platform": platform,
            "user": user_id,
            "direction": direction,
            "text": redact(text) if self.redact_text else text,
            **{k: "" if v is None else v for k, v in details.items()},
        }
        key = stream_key(platform, user_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.xadd(key, fields, maxlen=self.conversation_maxlen, approximate=True)
        pipe.expire(key, self.retention_s)
        pipe.xadd(GLOBAL_STREAM, fields, maxlen=self.global_maxlen, approximate=True)
        pipe.xtrim(GLOBAL_STREAM, minid=now_ms - self.retention_s * 1000, approximate=True)
        pipe.execute()

    def conversation(self, platform: str, user_id: str, count: int = 100) -> list[dict]:
        """The latest turns of one conversation, oldest first."""
        return _decode(reversed(self.redis.xrevrange(stream_key(platform, user_id), count=count)))

    def recent(self, count: int = 100) -> list[dict]:
        """The latest turns of all conversations, oldest first."""
        return _decode(reversed(self.redis.xrevrange(GLOBAL_STREAM, count=count)))


def _decode(entries) -> list[dict]:
    return [
        {"id": _text(entry_id), **{_text(k): _text(v) for k, v in fields.items()}}
        for entry_id, fields in entries
    ]


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
