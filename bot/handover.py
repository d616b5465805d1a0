"""Who answers a resident: the bot, or a member of staff who took the conversation over.

Kept apart from the conversation state on purpose: that expires after 30
idle minutes, while a take-over lasts until an operator hands the
conversation back (or a week passes).
"""
from __future__ import annotations

import json

_TAKEOVER_TTL = 7 * 86400


class Handover:
    def __init__(self, redis, address_ttl_seconds: int):
        self.redis = redis
        self.address_ttl_seconds = address_ttl_seconds

    @staticmethod
    def _key(kind: str, platform: str, user_id: str) -> str:
        return f"conv:{kind}:{platform}:{user_id}"

    def take_over(self, platform: str, user_id: str, operator: str) -> None:
        self.redis.set(self._key("human", platform, user_id), operator, ex=_TAKEOVER_TTL)

    def hand_back(self, platform: str, user_id: str) -> None:
        self.redis.delete(self._key("human", platform, user_id))

    def operator_of(self, platform: str, user_id: str) -> str | None:
        """The operator in charge, or None while the bot answers."""
        value = self.redis.get(self._key("human", platform, user_id))
        return value.decode() if value else None

    def operators_of(self, conversations: list[tuple[str, str]]) -> list[str | None]:
        """``operator_of`` for many (platform, user) at once, in one round trip: the console's lists."""
        if not conversations:
            return []
        values = self.redis.mget([self._key("human", platform, user) for platform, user in conversations])
        return [value.decode() if value else None for value in values]

    def remember_address(self, platform: str, user_id: str, address: dict) -> None:
        """Where the resident last wrote (Slack channel and thread), so staff reply there too."""
        if address:
            self.redis.set(self._key("address", platform, user_id), json.dumps(address), ex=self.address_ttl_seconds)

    def address(self, platform: str, user_id: str) -> dict:
        raw = self.redis.get(self._key("address", platform, user_id))
        return json.loads(raw) if raw else {}
