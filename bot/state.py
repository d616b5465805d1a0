"""Conversation state per (platform, user), kept in Redis with an idle expiry."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class ConversationState:
    lang: str = ""
    pending: list = field(default_factory=list)  # FAQ ids offered in "did you mean…"
    next_choices: list = field(default_factory=list)  # FAQ ids ranked next, offered if the resident turns
    # down what was shown: "none of these" after "did you mean…", or 👎 on the answer
    misses: int = 0  # consecutive questions we could not answer
    handoff: bool = False  # the resident should hear from a person
    last_answer: str = ""  # FAQ id of the last answer, for feedback
    last_question: str = ""  # what the resident last asked, so a 👎 can say which question failed


class StateStore:
    def __init__(self, redis, ttl_seconds: int, waiting_ttl_seconds: int = 0):
        """``waiting_ttl_seconds``: how long the state of a conversation waiting for staff lasts (the log's
        retention, as the console's Waiting list), so the bot does not forget the wait after 30 idle minutes
        while the console still shows it."""
        self.redis = redis
        self.ttl_seconds = ttl_seconds
        self.waiting_ttl_seconds = max(waiting_ttl_seconds, ttl_seconds)

    @staticmethod
    def key(platform: str, user_id: str) -> str:
        return f"conv:state:{platform}:{user_id}"

    def load(self, platform: str, user_id: str) -> ConversationState:
        raw = self.redis.get(self.key(platform, user_id))
        if not raw:
            return ConversationState()
        known = ConversationState.__dataclass_fields__
        return ConversationState(**{k: v for k, v in json.loads(raw).items() if k in known})

    def save(self, platform: str, user_id: str, state: ConversationState) -> None:
        """Only what differs from a new conversation's state: most residents' state is a language and an answer."""
        fresh = asdict(ConversationState())
        changed = {k: v for k, v in asdict(state).items() if v != fresh[k]}
        ttl = self.waiting_ttl_seconds if state.handoff else self.ttl_seconds
        self.redis.set(self.key(platform, user_id), json.dumps(changed, ensure_ascii=False), ex=ttl)

    def forget(self, platform: str, user_id: str) -> None:
        self.redis.delete(self.key(platform, user_id))
