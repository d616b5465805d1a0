"""The conversation log operators read: capped and expiring.

Each turn goes to the conversation's own list and to one global stream, which the console's live view reads
from an id onwards.  A conversation's turns are a list of JSON entries, not a stream: Redis gives a new stream
4 KB at once, and most residents write once or twice (4.7 KB against 0.5 KB for two turns).  The bot's replies
are kept once per distinct text (in a crisis thousands of residents get the same answer), the turn naming it.
Residents' phone numbers and e-mail addresses are redacted before storing (unless ``LOG_REDACT=false``); what
the bot and operators sent is kept as sent.  The application log never gets message text.
"""
from __future__ import annotations

import hashlib
import json
import re
import time

GLOBAL_STREAM = "log:all"
RECENT = "log:recent"  # sorted set: conversation -> time of its last turn
# Fields of an incoming turn that the conversation list shows.
_SUMMARY_FIELDS = ("text", "decision", "faq_id", "lang")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_PHONE = re.compile(r"(?<!\d)(?:[+＋]?\d[\d\-－‐ ]{8,14}\d)(?!\d)")


def redact(text: str) -> str:
    """Hide e-mail addresses and phone numbers (Japanese and international forms)."""
    text = _EMAIL.sub("[email]", text)
    return _PHONE.sub(lambda m: "[phone]" if sum(c.isdigit() for c in m.group()) >= 10 else m.group(), text)


def reply_key(ref: str) -> str:
    return f"log:reply:{ref}"


def turns_key(platform: str, user_id: str) -> str:
    return f"log:turns:{platform}:{user_id}"


def _stream_key(platform: str, user_id: str) -> str:
    """Where turns were kept before 2026-12-02 (a stream); read until they expire with ``LOG_RETENTION_DAYS``."""
    return f"log:conv:{platform}:{user_id}"


def summary_key(platform: str, user_id: str) -> str:
    return f"log:summary:{platform}:{user_id}"


class ConversationLog:
    def __init__(self, redis, retention_days: int, conversation_maxlen: int, global_maxlen: int, redact_text: bool):
        self.redis = redis
        self.retention_s = retention_days * 86400
        self.conversation_maxlen = conversation_maxlen
        self.global_maxlen = global_maxlen
        self.redact_text = redact_text

    def append(self, platform: str, user_id: str, direction: str, text: str = "", **details) -> None:
        """Record one turn; ``details`` are decision, faq_id, score, latency_ms, send_result… (None: left out)"""
        if direction == "in" and self.redact_text:
            text = redact(text)
        self._store(platform, user_id, {"direction": direction, "text": text, **details})

    def append_reply(self, platform: str, user_id: str, text: str, choices: list[str], **details) -> None:
        """Record the bot's reply: its text and choices under their hash, kept as long as any turn names them."""
        blob = json.dumps({"text": text, "choices": choices}, ensure_ascii=False)
        ref = hashlib.blake2b(blob.encode(), digest_size=10).hexdigest()
        self._store(platform, user_id, {"direction": "out", "reply": ref, **details}, shared=(reply_key(ref), blob))

    def _store(self, platform: str, user_id: str, turn: dict, shared: tuple[str, str] | None = None) -> None:
        now_ms = int(time.time() * 1000)
        turn = {k: _text(v) for k, v in {"ts": now_ms, **turn}.items() if v is not None}
        key = turns_key(platform, user_id)
        pipe = self.redis.pipeline(transaction=False)
        if shared:
            pipe.set(shared[0], shared[1], nx=True, ex=self.retention_s)
            pipe.expire(shared[0], self.retention_s)
        pipe.rpush(key, json.dumps(turn, ensure_ascii=False))
        pipe.ltrim(key, -self.conversation_maxlen, -1)
        pipe.expire(key, self.retention_s)
        pipe.xadd(GLOBAL_STREAM, _for_the_global_stream(platform, user_id, turn), maxlen=self.global_maxlen,
                  approximate=True)
        pipe.xtrim(GLOBAL_STREAM, minid=now_ms - self.retention_s * 1000, approximate=True)
        self._summarise(pipe, platform, user_id, turn, now_ms)
        pipe.execute()

    def _summarise(self, pipe, platform: str, user_id: str, fields: dict, now_ms: int) -> None:
        """Keep the conversation list's row current: last activity, and what the resident last asked."""
        summary = {"last_ts": now_ms, "last_direction": fields["direction"]}
        if fields["direction"] == "in":
            summary.update({f"last_{k}": fields.get(k, "") for k in _SUMMARY_FIELDS})
            if str(fields.get("decision", "")).startswith("feedback-"):
                summary["feedback"] = fields["decision"].removeprefix("feedback-")
        key = summary_key(platform, user_id)
        pipe.hset(key, mapping=summary)
        if str(fields.get("handoff", "")) == "1":
            pipe.hsetnx(key, "handoff_since", now_ms)  # when the resident started waiting for a person
        pipe.expire(key, self.retention_s)
        pipe.zadd(RECENT, {f"{platform}:{user_id}": now_ms})
        pipe.zremrangebyscore(RECENT, 0, now_ms - self.retention_s * 1000)

    def summaries(self, count: int = 200) -> list[dict]:
        """The most recently active conversations, newest first."""
        members = [m.decode().split(":", 1) for m in self.redis.zrevrange(RECENT, 0, count - 1)]
        pipe = self.redis.pipeline(transaction=False)
        for member in members:
            pipe.hgetall(summary_key(*member))
        return [{"platform": platform, "user": user, **{_text(k): _text(v) for k, v in row.items()}}
                for (platform, user), row in zip(members, pipe.execute()) if row]

    def conversation(self, platform: str, user_id: str, count: int = 100) -> list[dict]:
        """The latest turns of one conversation, oldest first."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.xrevrange(_stream_key(platform, user_id), count=count)
        pipe.lrange(turns_key(platform, user_id), -count, -1)
        earlier, turns = pipe.execute()
        turns = [{"platform": platform, "user": user_id, **json.loads(turn)} for turn in turns]
        refs = sorted({turn["reply"] for turn in turns if turn.get("reply")})
        replies = dict(zip(refs, self.redis.mget([reply_key(ref) for ref in refs]) if refs else []))
        for turn in turns:
            if turn.get("reply"):
                turn.update(_reply_fields(replies[turn.pop("reply")]))
        return (decode_entries(reversed(earlier)) + turns)[-count:]

    def recent(self, count: int = 100) -> list[dict]:
        """The latest turns of all conversations, oldest first."""
        return decode_entries(reversed(self.redis.xrevrange(GLOBAL_STREAM, count=count)))


def decode_entries(entries) -> list[dict]:
    return [
        {"id": _text(entry_id), **{_text(k): _text(v) for k, v in fields.items()}}
        for entry_id, fields in entries
    ]


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _reply_fields(blob) -> dict:
    """A reply's text and choices (the choices' labels as JSON, as the transcript shows them); empty once the
    reply has expired."""
    reply = json.loads(blob) if blob else {"text": "", "choices": []}
    return {"text": reply["text"], "choices": json.dumps(reply["choices"], ensure_ascii=False)}


def _for_the_global_stream(platform: str, user_id: str, turn: dict) -> dict:
    """A turn as the period-wide views read it (dashboard, labelled export, live list), without the text of
    what went out, which only a transcript shows."""
    left_out = ("reply", "text") if turn["direction"] == "out" else ()
    return {"platform": platform, "user": user_id, **{k: v for k, v in turn.items() if k not in left_out}}
