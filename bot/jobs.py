"""Queue jobs: plain functions the worker runs for each accepted platform event.

A job may run more than once (RQ retries after a failure, or the job is put
back after its worker died), so it is written to be repeated safely: the
reply is decided once and kept under the event id, and each send is marked
before and after the platform call (``bot.send_marks``).  A message that
cannot be delivered is never dropped silently: operators see it waiting.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict

from rq import get_current_job

from bot.convlog import redact
from bot.messages import POSTBACK, Choice, Incoming, Reply, SendError
from bot.send_marks import SendMarks

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
    """An operator's reply from the console, sent once however often the job runs."""
    services = _require_services()
    marks = SendMarks(services.redis, "operator", message_id, services.settings.dedupe_ttl_seconds)
    if marks.sent():
        return "already-sent"
    adapter = services.adapters[platform]

    def record(result: str, handoff: bool = False) -> None:
        services.convlog.append(platform, user_id, "out", text, decision="operator", operator=operator,
                                send_result=result, handoff=1 if handoff else None)
        if handoff:
            _wait_for_staff(services, platform, user_id)

    if marks.interrupted() and not adapter.pushes_once:
        return _unconfirmed(services, platform, marks, record)
    marks.begin("push")
    try:
        result = adapter.push(user_id, services.handover.address(platform, user_id), text, message_id)
    except SendError as error:
        if not error.delivered:
            marks.failed()
            return _after_failure(services, platform, error, record)
        result = "delivered-earlier"
    marks.done(result)
    record(result)
    return result


def process(services, adapter, incoming: Incoming) -> str:
    marks = SendMarks(services.redis, "event", f"{incoming.platform}:{incoming.event_id}",
                      services.settings.dedupe_ttl_seconds, leftovers=(_outbox_key(incoming),))
    if marks.sent():
        return "already-sent"
    reply = _decide_once(services, incoming)
    if reply is None:
        marks.done("no-reply")  # a redelivery finds it handled and is not logged again
        return "no-reply"

    def record(result: str, handoff: bool = False) -> None:
        _log_reply(services, incoming, reply, result, handoff)
        if handoff:
            _wait_for_staff(services, incoming.platform, incoming.user_id)

    interrupted = marks.interrupted()
    method = adapter.method(incoming, interrupted)
    if method is None:
        return _unconfirmed(services, incoming.platform, marks, record)
    marks.begin(method)
    try:
        result = adapter.send(incoming, reply, method, resend=interrupted is not None)
    except SendError as error:
        if not error.delivered:
            marks.failed()
            return _after_failure(services, incoming.platform, error, record)
        result = "delivered-earlier"
    marks.done(result)
    services.metrics.replied(_since_accepted(incoming))
    record(result)
    log.info("event %s (%s) answered by %s", incoming.event_id, incoming.detail, result)
    return result


def _after_failure(services, platform: str, error: SendError, record) -> str:
    """A platform error: raise it for RQ to retry while retries are left (transient errors only); otherwise give
    up where operators see it: the conversation waits for a person in the console, and /metrics counts it."""
    final = error.permanent or not _retries_left()
    services.metrics.send_failed(platform, "permanent" if error.permanent else "given-up" if final else "transient")
    if not final:
        record(f"failed, will retry: {error}")
        raise error
    record(f"undelivered: {error}", handoff=True)
    log.error("%s message undelivered: %s", platform, error)
    return "undelivered"


def _unconfirmed(services, platform: str, marks: SendMarks, record) -> str:
    """An interrupted send that may have arrived and cannot be sent again without risking a second copy."""
    services.metrics.send_failed(platform, "unconfirmed")
    record("unconfirmed: the worker stopped while the platform was answering; it may not have arrived",
           handoff=True)
    marks.done("unconfirmed")
    log.warning("%s message unconfirmed: its worker stopped during the send", platform)
    return "unconfirmed"


def _wait_for_staff(services, platform: str, user_id: str) -> None:
    """An answer that did not go out leaves the resident waiting for a person: the bot's state says so too, as
    the console's Waiting list does (``bot.dialogue``: while waiting it answers only what it is sure of)."""
    state = services.states.load(platform, user_id)
    if not state.handoff:
        state.handoff = True
        services.states.save(platform, user_id, state)


def _retries_left() -> bool:
    job = get_current_job()
    return bool(job is not None and job.retries_left)


def _decide_once(services, incoming: Incoming) -> Reply | None:
    """Run the dialogue on the first attempt only; later attempts reuse its reply."""
    outbox_key = _outbox_key(incoming)
    stored = services.redis.get(outbox_key)
    if stored is not None:
        return _reply_from_json(stored)
    services.handover.remember_address(incoming.platform, incoming.user_id, incoming.address)
    state = services.states.load(incoming.platform, incoming.user_id)
    if services.handover.operator_of(incoming.platform, incoming.user_id):
        turn = services.dialogue.while_staff_answer(incoming, state)
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


def _outbox_key(incoming: Incoming) -> str:
    """Where the decided reply waits until it is sent."""
    return f"event:reply:{incoming.platform}:{incoming.event_id}"


def _remember_unanswered(services, incoming: Incoming, turn) -> None:
    """Queue the question for operators, with the suggestions and embedding they group by."""
    nlu = services.dialogue.nlu
    lang = turn.lang or "ja"
    suggestions = [i for i in turn.suggestions if nlu.faq.get(i)]
    text = redact(turn.question) if services.settings.log_redact else turn.question
    services.unanswered.add(incoming.platform, incoming.user_id, text, lang, turn.decision, suggestions,
                            nlu.embedder.query(turn.question))


def _log_incoming(services, incoming: Incoming, turn) -> None:
    services.convlog.append(
        incoming.platform,
        incoming.user_id,
        "in",
        services.dialogue.in_words(incoming),
        event_id=incoming.event_id,
        kind=incoming.kind,
        tap=incoming.data.get("a") if incoming.kind == POSTBACK else None,
        decision=turn.decision,
        faq_id=turn.faq_id,
        score=None if turn.score is None else f"{turn.score:.4f}",
        nlu_ms=None if turn.nlu_ms is None else f"{turn.nlu_ms:.1f}",
        lang=turn.lang,
        handoff=1 if turn.state and turn.state.handoff else None,
    )


def _log_reply(services, incoming: Incoming, reply: Reply, result: str, handoff: bool) -> None:
    services.convlog.append_reply(incoming.platform, incoming.user_id, reply.text, [c.label for c in reply.choices],
                                  send_result=result, latency_ms=_age_ms(incoming), handoff=1 if handoff else None)


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
    return Reply(data["text"], tuple(Choice(**choice) for choice in data["choices"]), data.get("lead", ""))
