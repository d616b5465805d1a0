"""``GET /healthz`` for the PaaS: Redis reachable, a worker alive, an FAQ loaded.

Each worker reports every few seconds under its own name, so any number of
workers on any number of machines can be counted, a worker that stops
gracefully is forgotten at once, and one killed outright drops out once its
last report is older than ``WORKER_HEARTBEAT_MAX_AGE_SECONDS``.
"""
from __future__ import annotations

import json
import time

import redis
from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)
BEATS_KEY = "workers:beats"  # sorted set: worker name -> time of its last report
_STATUS_KEY = "workers:status:{}"  # what that worker serves (JSON), expiring by itself
_FORGET_AFTER_S = 86400  # reports this old are removed from the set


def write_heartbeat(client, name: str, status: dict, max_age_s: int) -> None:
    """One worker's report: alive now, serving this FAQ."""
    now = time.time()
    pipe = client.pipeline(transaction=False)
    pipe.zadd(BEATS_KEY, {name: now})
    pipe.set(_STATUS_KEY.format(name), json.dumps(status), ex=max(max_age_s, 1) * 2)
    pipe.zremrangebyscore(BEATS_KEY, 0, now - _FORGET_AFTER_S)
    pipe.execute()


def forget_worker(client, name: str) -> None:
    """A worker stopping gracefully stops counting at once."""
    client.pipeline(transaction=False).zrem(BEATS_KEY, name).delete(_STATUS_KEY.format(name)).execute()


def last_beats(client) -> dict[str, float]:
    """Every worker's last report time, live or not."""
    return {name.decode(): score for name, score in client.zrange(BEATS_KEY, 0, -1, withscores=True)}


def live_workers(services, now: float | None = None) -> dict[str, dict]:
    """The workers that reported within the max age, and since this web run began (a worker killed before a
    restart does not count), with what each serves."""
    now = time.time() if now is None else now
    since = max(now - services.settings.worker_heartbeat_max_age_seconds, services.started_at)
    names = [name.decode() for name in services.redis.zrangebyscore(BEATS_KEY, since, "+inf")]
    statuses = services.redis.mget([_STATUS_KEY.format(name) for name in names]) if names else []
    return {name: json.loads(raw) if raw else {} for name, raw in zip(names, statuses)}


@bp.get("/healthz")
def healthz():
    services = current_app.extensions["bot"]
    try:
        services.redis.ping()
        workers = live_workers(services)
        queued, oldest_s = services.queue.count, oldest_waiting_s(services.queue)
    except redis.RedisError as error:
        return jsonify(ok=False, redis=f"unreachable: {error}"), 503
    beat = max(workers.values(), key=lambda status: status.get("faq_loaded_at", 0), default={})
    checks = {
        "redis": "ok",
        "worker": "ok" if workers else "no heartbeat",
        "workers": len(workers),
        "faq": "ok" if beat.get("faq_entries") else "not loaded",
        "faq_entries": beat.get("faq_entries", 0),
        "faq_error": beat.get("faq_error", ""),
        "faq_index": beat.get("faq_index", ""),
        "outside_questions": beat.get("outside_questions", 0),
        "queued": queued,
        "oldest_waiting_s": round(oldest_s, 1),
        # the workers cannot keep up: answers now go out by push (the reply token has expired), so add workers.
        # Still 200: restarting this process would not help.
        "degraded": oldest_s > services.settings.reply_token_max_age_seconds,
    }
    ok = checks["worker"] == "ok" and checks["faq"] == "ok"
    return jsonify(ok=ok, **checks), 200 if ok else 503


def oldest_waiting_s(queue) -> float:
    """How long the oldest message in the queue has waited for a worker."""
    ids = queue.get_job_ids(0, 1)
    job = queue.fetch_job(ids[0]) if ids else None
    if job is None or job.enqueued_at is None:
        return 0.0
    return max(0.0, time.time() - job.enqueued_at.timestamp())
