"""The numbers for a period: how much the bot resolved without a person, and where it failed."""
from __future__ import annotations

import csv
import io
from collections import Counter
from datetime import date, timedelta

import numpy as np
from flask import Response, current_app, flash, redirect, render_template, request, url_for

from bot.console.blueprint import bp
from bot.console.conversations import anonymous_id, with_handoffs
from bot.console.improve import faq_in_service
from bot.console.times import day_bounds_ms, iso, moment, today
from bot.convlog import GLOBAL_STREAM, decode_entries
from bot.labelled import labelled_questions, paraphrase_yaml

QUESTION_DECISIONS = {"answered", "clarified", "fallback", "handoff", "human"}
NEEDED_A_PERSON = {"handoff", "human", "takeover"}


def period(args) -> tuple[date, date]:
    """``from``/``to`` as dates (inclusive) in the city's zone; the last 7 days by default."""
    last_day = today()
    start = date.fromisoformat(args["from"]) if args.get("from") else last_day - timedelta(days=6)
    end = date.fromisoformat(args["to"]) if args.get("to") else last_day
    return start, end


def turns_between(redis, start: date, end: date) -> list[dict]:
    """Every turn of every conversation in the period, oldest first."""
    first_ms, last_ms = day_bounds_ms(start, end)
    return decode_entries(redis.xrange(GLOBAL_STREAM, min=first_ms, max=last_ms))


def numbers(redis, start: date, end: date) -> dict:
    """Everything the dashboard shows, computed from the global conversation log."""
    turns = turns_between(redis, start, end)
    questions = [t for t in turns if t["direction"] == "in" and t.get("decision") in QUESTION_DECISIONS]
    conversations = {(t["platform"], t["user"]) for t in turns if t["direction"] == "in"}
    helped = {(t["platform"], t["user"]) for t in turns if t.get("decision") in NEEDED_A_PERSON}
    decisions = Counter(t["decision"] for t in questions)
    waits = [int(t["latency_ms"]) for t in turns if t["direction"] == "out" and not t.get("operator")
             and t.get("latency_ms", "").isdigit()]
    feedback = Counter(t["decision"] for t in turns if t.get("decision", "").startswith("feedback-"))
    per_day = Counter(moment(t["ts"]).date().isoformat() for t in questions)
    share = (lambda n: n / len(questions)) if questions else (lambda n: 0.0)
    return {
        "conversations": len(conversations),
        "messages": len(questions),
        "answered": share(decisions["answered"]),
        "clarified": share(decisions["clarified"]),
        "fallback": share(decisions["fallback"]),
        "handed_off": share(decisions["handoff"] + decisions["human"]),
        "resolved_without_human": 1 - len(helped & conversations) / len(conversations) if conversations else 0.0,
        "thumbs_up": feedback["feedback-up"],
        "thumbs_down": feedback["feedback-down"],
        "response_ms_p50": float(np.median(waits)) if waits else None,
        "response_ms_p95": float(np.percentile(waits, 95)) if waits else None,
        "top_faq": Counter(t["faq_id"] for t in questions if t["decision"] == "answered").most_common(10),
        "top_unanswered": Counter(t["text"] for t in questions if t["decision"] in ("fallback", "handoff")).most_common(10),
        "per_day": [((start + timedelta(days=d)).isoformat(), per_day[(start + timedelta(days=d)).isoformat()])
                    for d in range((end - start).days + 1)],
    }


@bp.get("/dashboard")
def dashboard():
    start, end = period(request.args)
    services = current_app.extensions["bot"]
    stats = numbers(services.redis, start, end)
    peak = max([n for _, n in stats["per_day"]] + [1])
    rows = with_handoffs(services.convlog.summaries(), services)
    waiting_now = sum(row["handoff"]["state"] == "waiting" for row in rows)
    return render_template("console/dashboard.html", stats=stats, start=start, end=end, peak=peak,
                           waiting_now=waiting_now)


def _csv(rows: list[list], filename: str) -> Response:
    out = io.StringIO()
    csv.writer(out).writerows(rows)
    return Response("\ufeff" + out.getvalue(), mimetype="text/csv",  # BOM: Excel opens Japanese text correctly
                    headers={"Content-Disposition": f"attachment; filename={filename}"})


@bp.get("/dashboard.csv")
def dashboard_csv():
    start, end = period(request.args)
    stats = numbers(current_app.extensions["bot"].redis, start, end)
    rows = [["metric", "value"]] + [[k, v] for k, v in stats.items() if not isinstance(v, list)]
    rows += [[f"messages {day}", n] for day, n in stats["per_day"]]
    return _csv(rows, f"faqbot-numbers-{start}-{end}.csv")


@bp.get("/conversations.csv")
def conversations_csv():
    rows = [["resident", "platform", "language", "last message", "last decision", "feedback", "last activity"]]
    for row in current_app.extensions["bot"].convlog.summaries(count=10_000):
        rows.append([anonymous_id(row["platform"], row["user"]), row["platform"], row.get("last_lang", ""),
                     row.get("last_text", ""), row.get("last_decision", ""), row.get("feedback", ""),
                     iso(row["last_ts"])])
    return _csv(rows, "faqbot-conversations.csv")


@bp.get("/labelled.yaml")
def labelled_yaml():
    """Residents' questions of the period, labelled by the entry they picked or confirmed (``bot.labelled``)."""
    start, end = period(request.args)
    services = current_app.extensions["bot"]
    faq = faq_in_service(services)
    if faq is None:
        flash("The FAQ files are broken (see /healthz): fix them before exporting labelled questions.")
        return redirect(url_for("console.dashboard", **{"from": start, "to": end}))
    rows = labelled_questions(turns_between(services.redis, start, end), faq)
    return Response(paraphrase_yaml(rows, f"{start} to {end}"), mimetype="application/x-yaml",
                    headers={"Content-Disposition": f"attachment; filename=faqbot-labelled-{start}-{end}.yaml"})
