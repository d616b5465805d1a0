"""Queue jobs: plain functions the worker runs for each accepted platform event.

A job may run more than once (RQ retries after a failure), so it is written
to be repeated safely: the reply is decided once and kept under the event id,
and a sent reply is marked before anything else can fail.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict

from rq import get_current_job

from bot.convlog import redact
from bot.dialogue import Turn
from bot.messages import TEXT, Choice, Incoming, Reply, SendError

log = logging.getLogger(__name__)

_services = None  # set once per worker process by bot.worker


def install(services) -> None:
    """Give jobs the worker's connections, adapters and loaded NLU."""
    global _services
    _services = services


def handle_event(platform: str, raw_event: dict) -> str:
    """Entry point RQ calls; returns what happened (kept on the job for debugging)."""
    services = _require_services()
    adapter = services.adapters[platform]
    incoming = adapter.parse(raw_event)
    if incoming is None:
        return "ignored"
    return process(services, adapter, incoming)


def _require_services():
    if _services is None:
        raise RuntimeError("no services installed: run jobs in `python -m bot.worker`")
    return _services


def send_operator_message(platform: str, user_id: str, text: str, operator: str, message_id: str) -> str:
    """An operator's reply from the console, sent once even if the job is retried."""
    services = _require_services()
    done_key = f"operator:sent:{message_id}"
    if services.redis.exists(done_key):
        return "already-sent"
    adapter = services.adapters[platform]
    try:
        result = adapter.push(user_id, services.handover.address(platform, user_id), text, message_id)
    except SendError as error:
        services.metrics.send_failed(platform, error.permanent)
        services.convlog.append(platform, user_id, "out", text, decision="operator", operator=operator,
                                send_result=f"failed: {error}")
        if not error.permanent:
            raise
        return "failed"
    services.redis.set(done_key, result, ex=services.settings.dedupe_ttl_seconds)
    services.convlog.append(platform, user_id, "out", text, decision="operator", operator=operator,
                            send_result=result)
    return result


def process(services, adapter, incoming: Incoming) -> str:
    redis = services.redis
    done_key = f"event:sent:{incoming.platform}:{incoming.event_id}"
    if redis.exists(done_key):
        return "already-sent"
    started = time.perf_counter()
    reply = _decide_once(services, adapter, incoming)
    if reply is None:
        return "no-reply"
    try:
        result = adapter.send(incoming, reply)
    except SendError as error:
        if error.delivered:
            result = "delivered-earlier"
        else:
            services.metrics.send_failed(incoming.platform, error.permanent)
            _log_reply(services, incoming, reply, f"failed: {error}", started)
            if not error.permanent:
                raise  # RQ retries; the next attempt sends the same reply
            log.error("permanent send failure for event %s: %s", incoming.event_id, error)
            return "failed"
    redis.set(done_key, result, ex=services.settings.dedupe_ttl_seconds)
    services.metrics.replied(_since_accepted(incoming))
    _log_reply(services, incoming, reply, result, started)
    log.info("event %s (%s) answered by %s", incoming.event_id, incoming.detail, result)
    return result


def _decide_once(services, adapter, incoming: Incoming) -> Reply | None:
    """Run the dialogue on the first attempt only; later attempts reuse its reply."""
    outbox_key = f"event:reply:{incoming.platform}:{incoming.event_id}"
    stored = services.redis.get(outbox_key)
    if stored is not None:
        return _reply_from_json(stored)
    if incoming.kind == TEXT and _age_ms(incoming) > services.settings.loading_animation_after_ms:
        adapter.show_loading(incoming)
    services.handover.remember_address(incoming.platform, incoming.user_id, incoming.address)
    state = services.states.load(incoming.platform, incoming.user_id)
    if services.handover.operator_of(incoming.platform, incoming.user_id):
        turn = Turn(None, state, decision="human")  # staff answer this conversation; the bot stays silent
    else:
        turn = services.dialogue.handle(incoming, state)
    _log_incoming(services, incoming, turn)
    services.metrics.decided(turn.decision, turn.lang, None if turn.nlu_ms is None else turn.nlu_ms / 1000)
    if turn.question:
        _remember_unanswered(services, incoming, turn)
    if turn.state is None:
        services.states.forget(incoming.platform, incoming.user_id)
    else:
        services.states.save(incoming.platform, incoming.user_id, turn.state)
    if turn.reply is not None:
        services.redis.set(outbox_key, _reply_to_json(turn.reply), ex=services.settings.dedupe_ttl_seconds)
    return turn.reply


def _remember_unanswered(services, incoming: Incoming, turn) -> None:
    """Queue the question for operators, with the suggestions and embedding they group by."""
    nlu = services.dialogue.nlu
    lang = turn.lang or "ja"
    suggestions = [(i, nlu.faq.get(i).text(lang).question) for i in turn.suggestions if nlu.faq.get(i)]
    text = redact(turn.question) if services.settings.log_redact else turn.question
    services.unanswered.add(incoming.platform, incoming.user_id, text, lang, turn.decision, suggestions,
                            nlu.embedder.query(turn.question))


def _log_incoming(services, incoming: Incoming, turn) -> None:
    text = incoming.text or (json.dumps(incoming.data, ensure_ascii=False) if incoming.data else "")
    services.convlog.append(
        incoming.platform,
        incoming.user_id,
        "in",
        text,
        event_id=incoming.event_id,
        event_type=incoming.detail,
        kind=incoming.kind,
        decision=turn.decision,
        faq_id=turn.faq_id,
        score="" if turn.score is None else f"{turn.score:.4f}",
        nlu_ms="" if turn.nlu_ms is None else f"{turn.nlu_ms:.1f}",
        lang=turn.lang,
        handoff=int(bool(turn.state and turn.state.handoff)),
    )


def _log_reply(services, incoming: Incoming, reply: Reply, result: str, started: float) -> None:
    services.convlog.append(
        incoming.platform,
        incoming.user_id,
        "out",
        reply.text,
        event_id=incoming.event_id,
        choices=json.dumps([c.label for c in reply.choices], ensure_ascii=False),
        send_result=result,
        latency_ms=_age_ms(incoming),
        job_ms=f"{(time.perf_counter() - started) * 1000:.1f}",
    )


def _since_accepted(incoming: Incoming) -> float:
    """Seconds since the webhook queued this event (the job's creation), for the webhook-to-reply histogram."""
    job = get_current_job()
    if job is None or job.created_at is None:
        return _age_ms(incoming) / 1000
    return max(0.0, time.time() - job.created_at.timestamp())


def _age_ms(incoming: Incoming) -> int:
    """Time since the resident sent the message: what they actually waited."""
    return max(0, int(time.time() * 1000) - incoming.timestamp_ms)


def _reply_to_json(reply: Reply) -> str:
    return json.dumps(asdict(reply), ensure_ascii=False)


def _reply_from_json(raw) -> Reply:
    data = json.loads(raw)
    return Reply(data["text"], tuple(Choice(**choice) for choice in data["choices"]))
