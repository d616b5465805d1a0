"""Local mode: a chat page that talks to the bot exactly as LINE or Slack would.

The page asks ``/local/sign`` for a webhook request in the platform's format,
signed with the platform's secret, and posts it to the real ``/callback`` or
``/slack/events`` / ``/slack/interactions``.  The worker's SDK sends the answer
to the stand-ins in ``bot/local_sinks.py``, and the page reads it from
``/local/messages``.  Registered only when BOT_MODE=local.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

from urllib.parse import urlencode

from flask import Blueprint, current_app, jsonify, render_template, request
from slack_sdk.signature import SignatureVerifier

from bot.local_sinks import outbox_key

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


def slack_request(user_id: str, kind: str, text: str = "", data: str = "") -> tuple[str, str]:
    """(path, body) of a Slack DM event or button click; the DM channel is "D" + the user id."""
    channel, now = "D" + user_id, f"{time.time():.6f}"
    if kind == "postback":
        click = {"type": "block_actions", "user": {"id": user_id}, "channel": {"id": channel},
                 "message": {"ts": now, "text": ""},
                 "actions": [{"action_id": "choice", "value": data, "action_ts": now, "text": {"text": ""}}]}
        return "/slack/interactions", urlencode({"payload": json.dumps(click, ensure_ascii=False)})
    event = {"type": "message", "channel_type": "im", "user": user_id, "text": text, "ts": now, "channel": channel}
    envelope = {"type": "event_callback", "event": event, "event_id": "Ev" + uuid.uuid4().hex[:12].upper(),
                "event_time": int(time.time()), "authorizations": [{"user_id": "UBOT", "is_bot": True}]}
    return "/slack/events", json.dumps(envelope, ensure_ascii=False)


def _signed_line(settings, user_id: str, kind: str, text: str, data: str) -> dict:
    event = line_event(user_id, kind, text, data)
    if "replyToken" in event:
        _services().redis.set(f"local:reply-token:{event['replyToken']}", user_id, ex=_TOKEN_TTL)
    body = json.dumps({"destination": "Ulocalbot", "events": [event]}, ensure_ascii=False)
    headers = {"X-Line-Signature": sign(body, settings.line_channel_secret), "Content-Type": "application/json"}
    return {"url": "/callback", "body": body, "headers": headers, "conversation": user_id}


def _signed_slack(settings, user_id: str, kind: str, text: str, data: str) -> dict:
    path, body = slack_request(user_id, kind, text, data)
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(settings.slack_signing_secret).generate_signature(timestamp=timestamp, body=body)
    content_type = "application/json" if path == "/slack/events" else "application/x-www-form-urlencoded"
    headers = {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature, "Content-Type": content_type}
    return {"url": path, "body": body, "headers": headers, "conversation": "D" + user_id}


@bp.post("/local/sign")
def sign_event():
    """Build and sign one webhook request for the chat page to post, as the platform would."""
    wanted = request.get_json(silent=True) or {}
    platform, kind = wanted.get("platform", "line"), wanted.get("type", "message")
    user_id = str(wanted.get("user_id") or "")
    line_kinds = ("message", "postback", "follow", "unfollow", "sticker")
    if not user_id.startswith("U") or kind not in (line_kinds if platform == "line" else ("message", "postback")):
        return jsonify(error="need user_id starting with U and a type the platform sends"), 400
    build = {"line": _signed_line, "slack": _signed_slack}.get(platform)
    if build is None or platform not in _services().adapters:
        return jsonify(error=f"platform {platform!r} is not configured"), 400
    return jsonify(build(_services().settings, user_id, kind, str(wanted.get("text", "")), str(wanted.get("data", ""))))


@bp.get("/local/messages")
def messages():
    """The bot's messages in one conversation after a stream id (the page polls this)."""
    after = request.args.get("after", "0")
    key = outbox_key(request.args.get("conversation", ""))
    entries = _services().redis.xrange(key, min=f"({after}" if after != "0" else "-")
    return jsonify([{"id": i.decode(), **json.loads(f[b"json"])} for i, f in entries])


