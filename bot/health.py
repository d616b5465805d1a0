"""``GET /healthz`` for the PaaS: Redis reachable, a worker alive, an FAQ loaded."""
from __future__ import annotations

import json
import time

import redis
from flask import Blueprint, current_app, jsonify

bp = Blueprint("health", __name__)
HEARTBEAT_KEY = "worker:heartbeat"


def write_heartbeat(client, status: dict, ttl_seconds: int) -> None:
    """Called by each worker every few seconds; expires if the worker dies."""
    client.set(HEARTBEAT_KEY, json.dumps({"ts": time.time(), **status}), ex=ttl_seconds)


@bp.get("/healthz")
def healthz():
    services = current_app.extensions["bot"]
    try:
        services.redis.ping()
        raw = services.redis.get(HEARTBEAT_KEY)
    except redis.RedisError as error:
        return jsonify(ok=False, redis=f"unreachable: {error}"), 503
    beat = json.loads(raw) if raw else {}
    age = time.time() - beat.get("ts", 0)
    checks = {
        "redis": "ok",
        "worker": "ok" if age <= services.settings.worker_heartbeat_max_age_seconds else "no heartbeat",
        "faq": "ok" if beat.get("faq_entries") else "not loaded",
        "faq_entries": beat.get("faq_entries", 0),
        "faq_error": beat.get("faq_error", ""),
        "faq_index": beat.get("faq_index", ""),
        "outside_questions": beat.get("outside_questions", 0),
        "queued": services.queue.count,
    }
    ok = checks["worker"] == "ok" and checks["faq"] == "ok"
    return jsonify(ok=ok, **checks), 200 if ok else 503
