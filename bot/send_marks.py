"""What was sent, and what was being sent when a worker died, so that no run of a job sends a message twice.

A job marks the method before it calls the platform and the result after.  A
later run (a retry, or the job put back after its worker died) that finds the
first mark without the second knows an attempt was interrupted, and sends
only in a way the platform deduplicates (``adapter.method``).
"""
from __future__ import annotations

import logging
import time

import redis

log = logging.getLogger(__name__)
#: Waits between tries to record a sent message while Redis is away (about a minute, within the job's timeout):
#: forgetting it would make the next run send again.
_RECORD_RETRY_DELAYS_S = (1, 2, 4, 8, 15, 30)


class SendMarks:
    def __init__(self, client, prefix: str, name: str, ttl_s: int, leftovers: tuple[str, ...] = ()):
        """``leftovers``: keys only a message not yet sent needs (its decided reply), removed once it is."""
        self.redis = client
        self.sent_key, self.attempt_key = f"{prefix}:sent:{name}", f"{prefix}:sending:{name}"
        self.ttl_s, self.leftovers = ttl_s, leftovers

    def sent(self) -> bool:
        return bool(self.redis.exists(self.sent_key))

    def interrupted(self) -> str | None:
        """The method of an attempt whose outcome nobody recorded (its worker died, or lost Redis, meanwhile)."""
        method = self.redis.get(self.attempt_key)
        return method.decode() if method else None

    def begin(self, method: str) -> None:
        self.redis.set(self.attempt_key, method, ex=self.ttl_s)

    def failed(self) -> None:
        """The platform answered with an error: nothing went out, so the next run may send freely."""
        self.redis.delete(self.attempt_key)

    def done(self, result: str) -> None:
        """Record the message as sent, waiting out a short Redis outage rather than forgetting it."""
        for delay in (*_RECORD_RETRY_DELAYS_S, None):
            try:
                self.redis.pipeline().set(self.sent_key, result, ex=self.ttl_s).delete(self.attempt_key,
                                                                                       *self.leftovers).execute()
                return
            except redis.RedisError as error:
                if delay is None:
                    raise
                log.warning("cannot record a sent message yet (Redis: %s); trying again in %d s", error, delay)
                time.sleep(delay)
