"""Webhook endpoints: verify, parse, dedupe, enqueue, answer at once.

The platform gets its answer in milliseconds; the NLU runs in the worker.
Every refusal is a short JSON body with a reason a developer can act on.
"""
from __future__ import annotations

import logging
import re

import redis
from flask import Blueprint, current_app, jsonify, request

from bot.messages import Malformed

log = logging.getLogger(__name__)
bp = Blueprint("webhook", __name__)
# What a body the adapters' checks did not foresee may still raise: the sender's fault (400), not ours (500).
_SHAPE_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError)
_NOT_IN_JOB_IDS = re.compile(r"[^A-Za-z0-9_-]")  # RQ's job ids: letters, digits, _ and -


def _refuse(status: int, reason: str):
    return jsonify(error=reason), status


@bp.post("/callback")
def line_callback():
    return accept(current_app.extensions["bot"], "line")


@bp.post("/slack/events")
@bp.post("/slack/interactions")
def slack_events():
    return accept(current_app.extensions["bot"], "slack")


def accept(services, platform: str):
    """The common path for every platform's webhook."""
    adapter = services.adapters.get(platform)
    if adapter is None:
        return _refuse(404, f"{platform} is not configured on this server")
    if (request.content_length or 0) > services.settings.max_body_bytes:
        return _refuse(413, f"body larger than {services.settings.max_body_bytes} bytes")
    body = request.stream.read(services.settings.max_body_bytes + 1)
    if len(body) > services.settings.max_body_bytes:
        return _refuse(413, f"body larger than {services.settings.max_body_bytes} bytes")
    if not adapter.verify(body, request.headers):
        log.warning("%s webhook: missing or invalid signature", platform)
        return _refuse(401, "missing or invalid signature")
    try:
        payload = adapter.decode(body)
        handshake = adapter.handshake(payload)
        if handshake is not None:
            return jsonify(handshake), 200
        events = adapter.events(payload)
        if events is None:
            return _refuse_malformed(platform, "body has no list of events")
        wanted = [raw for n, raw in enumerate(events) if _parse(adapter, n, raw) is not None]
    except Malformed as error:
        return _refuse_malformed(platform, str(error))
    except _SHAPE_ERRORS as error:
        return _refuse_malformed(platform, f"body is not {platform}'s shape ({type(error).__name__})")
    try:
        accepted = [e for e in wanted if _enqueue_once(services, platform, e)]
    except redis.RedisError as error:
        log.error("%s webhook: Redis unavailable (%s); asking the platform to retry", platform, error)
        return _refuse(503, "temporarily unavailable, please retry")
    log.debug("%s webhook: %d events, %d queued", platform, len(events), len(accepted))
    return jsonify(queued=len(accepted)), 200


def _parse(adapter, n: int, raw: dict):
    """The event's ``Incoming``, or None; every event is parsed before any is queued, so a bad one queues none."""
    try:
        return adapter.parse(raw)
    except Malformed as error:
        raise Malformed(f"event {n}: {error}") from None


def _refuse_malformed(platform: str, reason: str):
    """400, so the platform does not resend the body; the reason names fields, never the resident's text."""
    log.warning("%s webhook: refused a malformed body: %s", platform, reason)
    return _refuse(400, reason)


def _enqueue_once(services, platform: str, raw_event: dict) -> bool:
    """Queue the event unless a job for this event id is still queued, running or failed (a redelivery); one
    that comes after its job finished is run and found already answered (``bot.send_marks``)."""
    event_id = services.adapters[platform].event_id(raw_event)
    return services.enqueue("bot.jobs.handle_event", platform, raw_event, description=f"{platform} event {event_id}",
                            job_id=f"{platform}-" + _NOT_IN_JOB_IDS.sub("_", event_id))
