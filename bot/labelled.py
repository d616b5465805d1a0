"""Residents' own questions, labelled by what they did next: the bot's test set for this FAQ.

Thresholds calibrated on someone else's questions answer too boldly or too shyly on a new FAQ, and a city has
no labelled questions of its own on day one.  The conversation log has them: a resident who picks an entry
from "did you mean…" (or from the choices a 👎 brings) says which entry answers the question, and a 👍 on an
answer confirms it.  The export is a paraphrase YAML in the format of ``benchmarks/demo_paraphrases.yaml``, so
``python -m lab.evaluate --queries FILE`` and ``python -m lab.calibrate --queries FILE`` measure and calibrate
the bot on it as they do on the demo set.

Only what residents said counts.  An answer with no feedback is left out, not taken as right, and a 👎 takes
back a label.  So the set leans towards questions the bot answered or offered: a question whose right entry
never appeared among the choices is missing from it.  Texts identical to one of the FAQ's phrasings (an
example question tapped, an alternate an operator already added) are left out too: every system gets those
right, and they would flatter the numbers.
"""
from __future__ import annotations

import json
from collections import defaultdict

import yaml

from nlu.text import same_text_key

QUESTION_DECISIONS = ("answered", "clarified", "fallback", "handoff")
CHOSEN, CONFIRMED = "chosen", "confirmed"


def _postback_action(turn: dict) -> str:
    """A postback turn's action ("select", "feedback", …): its ``tap`` field, or in turns logged before
    2026-12-02, its text, the postback's data as JSON."""
    if turn.get("tap"):
        return turn["tap"]
    try:
        data = json.loads(turn.get("text") or "{}")
    except ValueError:
        return ""
    return data.get("a", "") if isinstance(data, dict) else ""


def _labels_of_one_conversation(turns: list[dict]) -> list[dict]:
    """The labelled questions of one resident's turns, oldest first."""
    rows, question = [], None

    def close():
        if question and question["faq"]:
            rows.append(question)

    for turn in turns:
        kind, decision, faq_id = turn.get("kind"), turn.get("decision", ""), turn.get("faq_id", "")
        if kind == "text" and decision in QUESTION_DECISIONS:
            close()
            question = {"text": turn.get("text", ""), "lang": turn.get("lang", ""), "faq": "", "how": "",
                        "answered": faq_id if decision == "answered" else ""}
        elif question is None:
            continue
        elif kind == "postback" and _postback_action(turn) == "select" and decision == "answered" and faq_id:
            question.update(faq=faq_id, how=CHOSEN, answered=faq_id)
        elif decision == "feedback-up" and faq_id == question["answered"] and not question["faq"]:
            question.update(faq=faq_id, how=CONFIRMED)
        elif decision == "feedback-down" and faq_id == question["answered"]:
            question.update(faq="", how="")
    close()
    return rows


def labelled_questions(turns: list[dict], faq) -> list[dict]:
    """``turns``: incoming and outgoing turns of the conversation log (any order of conversations, each one's
    turns oldest first), as ``convlog.decode_entries`` gives them; ``faq``: the FAQ in service, with the
    alternates operators accepted.  Returns {text, lang, faq, how} per labelled question, for entries the FAQ
    still has."""
    by_conversation = defaultdict(list)
    for turn in turns:
        if turn.get("direction") == "in":
            by_conversation[(turn.get("platform"), turn.get("user"))].append(turn)
    known = {same_text_key(text) for entry in faq.entries for text_of in entry.texts.values()
             for text in text_of.phrasings}
    rows = [row for conversation in by_conversation.values() for row in _labels_of_one_conversation(conversation)]
    return [row for row in rows if faq.get(row["faq"]) and row["lang"] in ("ja", "en") and row["text"].strip()
            and same_text_key(row["text"]) not in known]


def paraphrase_yaml(rows: list[dict], period: str) -> str:
    """The rows in the paraphrase YAML ``lab.evaluate --queries`` reads (how each was labelled, as a comment)."""
    lines = [f"# Residents' questions labelled by their own choices ({period}), from the operator console.",
             f"# {sum(r['how'] == CHOSEN for r in rows)} picked from a list, "
             f"{sum(r['how'] == CONFIRMED for r in rows)} confirmed with a thumbs-up.",
             "# Measure: python -m lab.evaluate --queries FILE --json out.json",
             "# Calibrate: python -m lab.calibrate --queries FILE --holdout",
             "# The harness adds 400 out-of-scope questions from ../shared/datasets where it is; add residents'",
             "# questions the FAQ does not cover too (out_of_scope: {ja: [...], en: [...]}, as",
             "# benchmarks/demo_paraphrases.yaml has them): without any, nothing stops the bot answering everything."]
    body = yaml.safe_dump({"queries": [{"faq": r["faq"], "lang": r["lang"], "text": r["text"]} for r in rows]},
                          allow_unicode=True, sort_keys=False, width=1000)
    return "\n".join(lines) + "\n" + body
