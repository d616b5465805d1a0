"""Local mode: a chat page in the browser and a stand-in for the LINE API.

The page asks ``/local/sign`` for a LINE-format webhook event signed with the
channel secret, then posts it to the real ``/callback`` like LINE would.  The
worker's SDK sends the answer to ``/local/line-api/…`` (LINE_API_BASE_URL in
local mode), which keeps it for the page to show.  Registered only when
BOT_MODE=local.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

from flask import Blueprint, abort, current_app, jsonify, render_template, request

bp = Blueprint("local_chat", __name__, template_folder="templates")
_TOKEN_TTL = 3600


def _services():
    return current_app.extensions["bot"]


def sign(body: str, channel_secret: str) -> str:
    """The X-Line-Signature LINE would send for ``body``."""
    digest = hmac.new(channel_secret.encode(), body.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def line_event(user_id: str, kind: str, text: str = "", data: str = "", reply_token: str = "") -> dict:
    """A webhook event in LINE's format (the fields our adapter and LINE's SDK read)."""
    event = {
        "type": kind,
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "source": {"type": "user", "userId": user_id},
        "webhookEventId": uuid.uuid4().hex.upper()[:26],
        "deliveryContext": {"isRedelivery": False},
    }
    if kind != "unfollow":
        event["replyToken"] = reply_token or uuid.uuid4().hex
    if kind == "message":
        event["message"] = {"type": "text", "id": str(time.time_ns()), "text": text, "quoteToken": "local"}
    elif kind == "sticker":
        event.update(type="message", message={"type": "sticker", "id": str(time.time_ns()), "packageId": "1",
                                              "stickerId": "1", "stickerResourceType": "STATIC", "quoteToken": "q"})
    elif kind == "postback":
        event["postback"] = {"data": data}
    elif kind == "follow":
        event["follow"] = {"isUnblocked": False}
    return event


@bp.get("/")
def chat_page():
    return render_template("chat.html")


@bp.post("/local/sign")
def sign_event():
    """Build and sign one event for the chat page to post to /callback."""
    request_data = request.get_json(silent=True) or {}
    user_id = str(request_data.get("user_id") or "")
    kind = request_data.get("type", "message")
    if not user_id.startswith("U") or kind not in ("message", "postback", "follow", "unfollow", "sticker"):
        return jsonify(error="need user_id starting with U and a known type"), 400
    event = line_event(user_id, kind, str(request_data.get("text", "")), str(request_data.get("data", "")))
    if "replyToken" in event:
        _services().redis.set(f"local:reply-token:{event['replyToken']}", user_id, ex=_TOKEN_TTL)
    body = json.dumps({"destination": "Ulocalbot", "events": [event]}, ensure_ascii=False)
    return jsonify(body=body, signature=sign(body, _services().settings.line_channel_secret))


@bp.get("/local/messages")
def messages():
    """The bot's messages to one user after a stream id (the page polls this)."""
    user_id = request.args.get("user_id", "")
    after = request.args.get("after", "0")
    entries = _services().redis.xrange(f"local:outbox:{user_id}", min=f"({after}" if after != "0" else "-")
    return jsonify([{"id": i.decode(), **json.loads(f[b"json"])} for i, f in entries])


@bp.post("/local/line-api/v2/bot/message/<kind>")
def line_api_message(kind: str):
    """Stand-in for LINE's reply and push endpoints."""
    services = _services()
    if request.headers.get("Authorization") != f"Bearer {services.settings.line_channel_access_token}":
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
    sent = [
        services.redis.xadd(f"local:outbox:{user_id}", {"json": json.dumps(message, ensure_ascii=False)},
                            maxlen=500, approximate=True).decode()
        for message in payload.get("messages", [])
    ]
    return jsonify(sentMessages=[{"id": message_id, "quoteToken": message_id} for message_id in sent]), 200


@bp.post("/local/line-api/v2/bot/chat/loading/start")
def line_api_loading():
    """Stand-in for the loading animation (the page shows its own dots while waiting)."""
    return jsonify({}), 202
