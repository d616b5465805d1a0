"""The "unanswered" view: group what the bot could not answer, and turn it into FAQ phrasings."""
from __future__ import annotations

import numpy as np
from flask import Response, current_app, flash, redirect, render_template, request, url_for

from bot.console.blueprint import bp
from bot.unanswered import unpack
from bot.console.faq_files import faq_files
from nlu.faq import with_alternates
from nlu.faq_patch import patch

SAME_QUESTION = 0.92  # cosine of e5 embeddings above which two questions count as one


def group(items: list[dict], threshold: float = SAME_QUESTION) -> list[dict]:
    """Greedy grouping of near-duplicates, per language, newest question first in each group."""
    groups: list[dict] = []
    for item in items:
        vector = unpack(item["vector"])
        vector /= np.linalg.norm(vector) or 1.0
        home = next((g for g in groups if g["lang"] == item["lang"] and float(g["centroid"] @ vector) >= threshold),
                    None)
        if home is None:
            groups.append({"lang": item["lang"], "centroid": vector, "items": [item]})
        else:
            home["items"].append(item)
            home["centroid"] = home["centroid"] + (vector - home["centroid"]) / len(home["items"])
    for g in groups:
        g["ids"] = ",".join(i["id"] for i in g["items"])
        g["suggestions"] = g["items"][0]["suggestions"]
    return sorted(groups, key=lambda g: -len(g["items"]))


def _faq():
    """The FAQ files (not the model) — only to offer and check entry ids; their last good version while broken."""
    return faq_files(current_app.extensions["bot"].settings.faq_dir)[0]


def faq_in_service(services):
    """The FAQ as the worker serves it: the files (their last good version) plus the alternates operators
    accepted (None: no good version read yet)."""
    faq = _faq()
    return faq and with_alternates(faq, services.overlay.snapshot()[1], faq.signature)


@bp.get("/unanswered")
def unanswered():
    services = current_app.extensions["bot"]
    faq = _faq()
    _, pending, outside = services.overlay.snapshot()
    groups = group(services.unanswered.items())
    for g in groups:
        g["suggestions"] = [(i, _question(faq, i, g["lang"])) for i in map(_suggested_id, g["suggestions"])]
    return render_template("console/unanswered.html", groups=groups,
                           entries=faq.entries if faq else [], pending=pending, outside=outside)


def _suggested_id(suggestion) -> str:
    """Items kept before 2026-12-02 carry [id, question]."""
    return suggestion[0] if isinstance(suggestion, list) else suggestion


def _question(faq, faq_id: str, lang: str) -> str:
    entry = faq and faq.get(faq_id)
    return entry.text(lang).question if entry else "(not in the FAQ now)"


@bp.post("/unanswered/attach")
def attach():
    """Accept a question as a new alternate phrasing of an entry; the worker picks it up within seconds."""
    services = current_app.extensions["bot"]
    faq, faq_id = _faq(), request.form.get("faq_id", "").strip()
    items = {i["id"]: i for i in services.unanswered.items()}
    chosen = [items[i] for i in request.form.getlist("item") if i in items]
    if faq is None:
        flash("The FAQ files are broken and this console has not read a good version of them yet: attaching "
              "waits until they are fixed (see the banner).")
        return redirect(url_for("console.unanswered"))
    if faq.get(faq_id) is None or not chosen:
        flash(f"Pick a question and an existing FAQ entry (got {faq_id!r}).")
        return redirect(url_for("console.unanswered"))
    phrasings = {(item["lang"], item["text"]): None for item in chosen}  # a group's copies: one phrasing each
    for lang, text in phrasings:
        services.overlay.add(faq_id, lang, text)
    return _settled(services, chosen, f"Added {len(phrasings)} phrasing(s) to {faq_id} from {len(chosen)} "
                                      "question(s); the bot uses them within a few seconds.")


@bp.post("/unanswered/dismiss")
def dismiss():
    current_app.extensions["bot"].unanswered.remove(request.form.get("ids", "").split(","))
    return redirect(url_for("console.unanswered"))


@bp.post("/unanswered/not-ours")
def not_ours():
    """Mark questions as another department's: the worker stops answering questions nearer them than any entry
    (``NLU_OUTSIDE_FILE``), within seconds."""
    services = current_app.extensions["bot"]
    items = {i["id"]: i for i in services.unanswered.items()}
    chosen = [items[i] for i in request.form.get("ids", "").split(",") if i in items]
    services.overlay.add_outside([item["text"] for item in chosen])
    return _settled(services, chosen, f"Marked {len(chosen)} question(s) as not the FAQ's: to questions nearer "
                                      "them than to any entry, the bot says where else to ask, beside its choices, "
                                      "rather than answering.")


def _settled(services, chosen: list[dict], message: str):
    """The chosen questions leave the queue, and the operator reads what became of them."""
    services.unanswered.remove([item["id"] for item in chosen])
    flash(message)
    return redirect(url_for("console.unanswered"))


@bp.get("/unanswered/outside.txt")
def export_outside():
    """The questions marked "not ours", as lines to add to the NLU_OUTSIDE_FILE."""
    outside = current_app.extensions["bot"].overlay.snapshot()[2]
    return Response("".join(f"{text}\n" for text in outside), mimetype="text/plain",
                    headers={"Content-Disposition": "attachment; filename=outside-questions.txt"})


@bp.post("/unanswered/clear")
def clear_overlay():
    """After the exports went into the files (and the worker serves them from there)."""
    current_app.extensions["bot"].overlay.clear()
    flash("Cleared the accepted phrasings and \"not ours\" questions kept in Redis: the bot now serves what the "
          "files hold.")
    return redirect(url_for("console.unanswered"))


@bp.get("/unanswered/patch")
def export_patch():
    """The accepted phrasings as a diff of faq_data/ (review, then ``git apply``)."""
    services = current_app.extensions["bot"]
    diff = patch(services.settings.faq_dir, services.overlay.snapshot()[1])
    return Response(diff or "# nothing accepted yet\n", mimetype="text/x-diff",
                    headers={"Content-Disposition": "attachment; filename=faq-alternates.patch"})
