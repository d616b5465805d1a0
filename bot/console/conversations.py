"""Watching conversations live, reading transcripts, taking over and handing back."""
from __future__ import annotations

import hashlib
import re
import time
import uuid

from flask import abort, current_app, g, jsonify, redirect, render_template, request, url_for

from bot.console.blueprint import bp
from bot.console.times import clock
from bot.convlog import GLOBAL_STREAM, summary_key

_SEARCH_DEPTH = 100  # turns per conversation searched for text
_CHANGED_FIELDS = (b"platform", b"user", b"direction", b"decision")  # no message text leaves through /changes
_CHANGES_PER_POLL = 100
_CURSOR = re.compile(r"^\d+(-\d+)?$")  # a stream id, or epoch milliseconds


def _services():
    return current_app.extensions["bot"]


def anonymous_id(platform: str, user_id: str) -> str:
    """A short stable pseudonym: enough to tell residents apart, not to identify them."""
    return hashlib.sha256(f"{platform}:{user_id}".encode()).hexdigest()[:8]


def with_handoffs(rows: list[dict], services) -> list[dict]:
    """Each row (a conversation's summary) with ``handoff``: where the conversation stands between the bot and
    staff, one state shown alike in every view: "taken" (an operator answers; the bot is silent), "waiting"
    (the bot handed it to staff: the resident asked for a person, two misses, or an answer that could not be
    delivered; the bot answers only what it is sure of meanwhile), or "" (the bot answers).  Hand back and
    Resolve end both."""
    operators = services.handover.operators_of([(row["platform"], row["user"]) for row in rows])
    for row, operator in zip(rows, operators):
        if operator:
            row["handoff"] = {"state": "taken", "operator": operator}
        elif row.get("handoff_since"):
            row["handoff"] = {"state": "waiting", "since": int(row["handoff_since"])}
        else:
            row["handoff"] = {"state": ""}
    return rows


def _status(row: dict) -> str:
    return "human" if row["handoff"]["state"] == "taken" else row.get("last_decision", "")


def _matches(row: dict, args, services) -> bool:
    """The list's filters: needs a human, fallback, negative feedback, language, date, text."""
    wanted = args.get("show", "")
    if wanted == "human" and not row["handoff"]["state"]:
        return False
    if wanted == "fallback" and row.get("last_decision") not in ("fallback", "handoff"):
        return False
    if wanted == "negative" and row.get("feedback") != "down":
        return False
    if args.get("lang") and row.get("last_lang") != args["lang"]:
        return False
    if args.get("date") and clock(row.get("last_ts"))[:10] != args["date"]:
        return False
    query = args.get("q", "").strip().lower()
    if query:
        turns = services.convlog.conversation(row["platform"], row["user"], count=_SEARCH_DEPTH)
        return any(query in turn.get("text", "").lower() for turn in turns)
    return True


def conversation_rows(args) -> list[dict]:
    services = _services()
    rows = []
    for row in with_handoffs(services.convlog.summaries(), services):
        row["anon"] = anonymous_id(row["platform"], row["user"])
        row["status"] = _status(row)
        if _matches(row, args, services):
            rows.append(row)
    return rows


@bp.get("/")
def home():
    return redirect(url_for("console.conversations"))


@bp.get("/conversations")
def conversations():
    rows = conversation_rows(request.args)
    if request.args.get("partial"):
        return render_template("console/_rows.html", rows=rows)
    return render_template("console/conversations.html", rows=rows, args=request.args)


@bp.get("/waiting")
def waiting():
    """Residents who asked for a person and are not being served yet, longest wait first."""
    services = _services()
    rows = [{**row, "anon": anonymous_id(row["platform"], row["user"])}
            for row in with_handoffs(services.convlog.summaries(), services) if row["handoff"]["state"] == "waiting"]
    return render_template("console/waiting.html", rows=sorted(rows, key=lambda r: r["handoff"]["since"]))


@bp.get("/c/<platform>/<user_id>")
def transcript(platform: str, user_id: str):
    services = _services()
    turns = services.convlog.conversation(platform, user_id, count=500)
    summary = {k.decode(): v.decode() for k, v in services.redis.hgetall(summary_key(platform, user_id)).items()}
    [row] = with_handoffs([{"platform": platform, "user": user_id, **summary}], services)
    handoff = row["handoff"]
    return render_template(
        "console/transcript.html", platform=platform, user_id=user_id, turns=turns,
        anon=anonymous_id(platform, user_id), handoff=handoff,
        operator_in_charge=handoff.get("operator"), summary=summary,
    )


def _noted(platform: str, user_id: str, decision: str, text: str):
    """Record an operator's action in the transcript, then show the transcript."""
    _services().convlog.append(platform, user_id, "event", f"{g.operator} {text}", decision=decision,
                               operator=g.operator)
    return redirect(url_for("console.transcript", platform=platform, user_id=user_id))


@bp.post("/c/<platform>/<user_id>/takeover")
def take_over(platform: str, user_id: str):
    _services().handover.take_over(platform, user_id, g.operator)
    return _noted(platform, user_id, "takeover", "took over")


@bp.post("/c/<platform>/<user_id>/handback")
def hand_back(platform: str, user_id: str):
    """The bot answers again; the resident no longer waits for a person."""
    _services().handover.hand_back(platform, user_id)
    _stop_waiting(platform, user_id)
    return _noted(platform, user_id, "handback", "handed back to the bot")


@bp.post("/c/<platform>/<user_id>/resolve")
def resolve(platform: str, user_id: str):
    """The resident no longer waits (staff called back, or the question was settled elsewhere); the bot goes on
    answering as before."""
    _stop_waiting(platform, user_id)
    return _noted(platform, user_id, "resolved", "resolved the request for a person")


def _stop_waiting(platform: str, user_id: str) -> None:
    services = _services()
    state = services.states.load(platform, user_id)
    state.handoff, state.misses = False, 0
    services.states.save(platform, user_id, state)
    services.redis.hdel(summary_key(platform, user_id), "handoff_since")


@bp.post("/c/<platform>/<user_id>/send")
def send(platform: str, user_id: str):
    """Queue the operator's message; the worker sends it through the platform adapter."""
    services = _services()
    text = request.form.get("text", "").strip()
    if text and services.handover.operator_of(platform, user_id) == g.operator and platform in services.adapters:
        message_id = uuid.uuid4().hex
        services.enqueue("bot.jobs.send_operator_message", platform, user_id, text, g.operator, message_id,
                         description=f"operator message {message_id}")
    return redirect(url_for("console.transcript", platform=platform, user_id=user_id))


@bp.get("/changes")
def changes():
    """Turns logged after ``after``, answered at once: pages poll this, so an open page never holds a web thread."""
    after = request.args.get("after", "")
    if not _CURSOR.match(after):
        abort(400, "after: a stream id, or the page's render time in epoch milliseconds")
    found = _services().redis.xread({GLOBAL_STREAM: after}, count=_CHANGES_PER_POLL)  # no block: never waits
    entries = found[0][1] if found else []
    return jsonify(
        after=entries[-1][0].decode() if entries else after,
        turns=[{k.decode(): v.decode() for k, v in fields.items() if k in _CHANGED_FIELDS} for _, fields in entries],
    )


@bp.app_context_processor
def _now_ms():
    return {"now_ms": int(time.time() * 1000)}


@bp.app_template_filter("since")
def since(ms) -> str:
    """How long ago, for the list."""
    if not ms:
        return ""
    seconds = int(time.time() - int(ms) / 1000)
    return f"{seconds // 60} min ago" if seconds >= 60 else "just now"

