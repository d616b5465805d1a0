"""Local mode's stand-ins for the LINE and Slack Web APIs.

The worker's real SDKs send here (LINE_API_BASE_URL / SLACK_API_BASE_URL in
local mode); each message is stored in one neutral shape, ``{text, buttons}``,
for the chat page to show.  Registered only when BOT_MODE=local.
"""
from __future__ import annotations

import json

from flask import Blueprint, abort, current_app, jsonify, request

bp = Blueprint("local_sinks", __name__)


def outbox_key(conversation: str) -> str:
    return f"local:outbox:{conversation}"


def _store(conversation: str, text: str, buttons: list[dict], rows: list[dict] = ()) -> str:
    redis = current_app.extensions["bot"].redis
    entry = json.dumps({"text": text, "buttons": buttons, "rows": list(rows)}, ensure_ascii=False)
    return redis.xadd(outbox_key(conversation), {"json": entry}, maxlen=500, approximate=True).decode()


def _authorized(token: str) -> bool:
    return request.headers.get("Authorization") == f"Bearer {token}"


@bp.post("/local/line-api/v2/bot/message/<kind>")
def line_message(kind: str):
    """LINE's reply and push endpoints."""
    services = current_app.extensions["bot"]
    if not _authorized(services.settings.line_channel_access_token):
        return jsonify(message="Authentication failed"), 401
    payload = request.get_json(force=True)
    if kind == "reply":
        user_id = services.redis.getdel(f"local:reply-token:{payload.get('replyToken')}")
        if user_id is None:
            return jsonify(message="Invalid reply token"), 400
        user_id = user_id.decode()
    elif kind == "push":
        user_id = payload.get("to", "")
    else:
        abort(404)
    sent = []
    for message in payload.get("messages", []):
        text, rows = _line_text_and_rows(message)
        sent.append(_store(user_id, text, _line_buttons(message), rows))
    return jsonify(sentMessages=[{"id": i, "quoteToken": i} for i in sent])


def _line_buttons(message: dict) -> list[dict]:
    return [_button(item["action"]) for item in (message.get("quickReply") or {}).get("items", [])]


def _button(action: dict, label: str = "") -> dict:
    label = label or action["label"]
    if action["type"] == "postback":
        return {"label": label, "postback": action["data"], "shown": action.get("displayText") or label}
    return {"label": label, "text": action["text"]}


def _line_text_and_rows(message: dict) -> tuple[str, list[dict]]:
    """A text message's text; a Flex "did you mean…" as its lead and its tappable rows (as the bot builds it:
    a text, then boxes that each hold a text and an action)."""
    if message.get("type") != "flex":
        return message.get("text", ""), []
    parts = message["contents"]["body"]["contents"]
    lead = next(part["text"] for part in parts if part["type"] == "text")
    rows = [_button(part["action"], part["contents"][0]["text"]) for part in parts if part.get("action")]
    return lead, rows


@bp.post("/local/line-api/v2/bot/chat/loading/start")
def line_loading():
    """LINE's loading animation (the page shows its own dots while waiting)."""
    return jsonify({}), 202


@bp.post("/local/slack-api/<method>")
def slack_method(method: str):
    """Slack's chat.postMessage and chat.update; DM channel ids are "D" + the user id."""
    if not _authorized(current_app.extensions["bot"].settings.slack_bot_token):
        return jsonify(ok=False, error="invalid_auth")
    payload = request.get_json(silent=True) or request.form.to_dict()
    if method == "chat.update":
        return jsonify(ok=True, channel=payload.get("channel"), ts=payload.get("ts"))
    if method != "chat.postMessage":
        return jsonify(ok=False, error="unknown_method")
    buttons = [{"label": e["text"]["text"], "postback": e["value"], "shown": e["text"]["text"]}
               for block in payload.get("blocks") or [] if block.get("type") == "actions"
               for e in block["elements"]]
    ts = _store(payload.get("channel", ""), payload.get("text", ""), buttons)
    return jsonify(ok=True, channel=payload.get("channel"), ts=ts.replace("-", "."))
