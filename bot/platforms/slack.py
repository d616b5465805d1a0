"""Slack: the only module that imports slack_sdk.

Web side: verify the signing secret, answer Slack's handshakes, and turn
Events API envelopes and button clicks into ``Incoming``.  Worker side: post
the reply in the right thread with Block Kit buttons, and mark a clicked
message as answered.
"""
from __future__ import annotations

import json
import logging
import re
from contextlib import contextmanager
from urllib.parse import parse_qs

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier

from bot.messages import POSTBACK, TEXT, UNSUPPORTED, Incoming, Reply, SendError, decode_postback, encode_postback

log = logging.getLogger(__name__)

PLATFORM = "slack"
_MENTION = re.compile(r"<@[A-Z0-9]+>")
_PERMANENT = {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "channel_not_found",
              "not_in_channel", "is_archived", "missing_scope"}
_BUTTON_TEXT_MAX = 75


class SlackAdapter:
    """Verify, parse and send for one Slack app."""

    platform = PLATFORM

    def __init__(self, signing_secret: str, bot_token: str, api_base_url: str):
        self._verifier = SignatureVerifier(signing_secret)
        self._client = WebClient(token=bot_token, base_url=api_base_url.rstrip("/") + "/", timeout=10,
                                 retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)])

    # -- web side ---------------------------------------------------------
    def verify(self, body: bytes, headers) -> bool:
        try:
            return self._verifier.is_valid(body, headers.get("X-Slack-Request-Timestamp"),
                                           headers.get("X-Slack-Signature"))
        except ValueError:  # a timestamp that is not a number
            return False

    @staticmethod
    def decode(body: bytes):
        """Events arrive as JSON, button clicks as a form with a JSON ``payload``."""
        if body.startswith(b"payload="):
            return json.loads(parse_qs(body.decode("utf-8"))["payload"][0])
        if body.startswith(b"ssl_check="):
            return {"type": "ssl_check"}
        return json.loads(body)

    @staticmethod
    def handshake(payload) -> dict | None:
        """Slack's checks of the endpoint, answered at once and never queued."""
        if isinstance(payload, dict) and payload.get("type") == "url_verification":
            return {"challenge": payload.get("challenge", "")}
        if isinstance(payload, dict) and payload.get("type") == "ssl_check":
            return {}
        return None

    def events(self, payload) -> list[dict] | None:
        """One envelope or one click per request; None when it is neither."""
        if isinstance(payload, dict) and payload.get("type") in ("event_callback", "block_actions"):
            return [payload]
        return None

    def event_id(self, raw: dict) -> str:
        if raw.get("type") == "block_actions":
            action = (raw.get("actions") or [{}])[0]
            return f"action-{(raw.get('user') or {}).get('id')}-{action.get('action_ts')}"
        return str(raw.get("event_id") or "")

    def parse(self, raw: dict) -> Incoming | None:
        if raw.get("type") == "block_actions":
            return _click(raw, self.event_id(raw))
        event = raw.get("event") or {}
        own = {a.get("user_id") for a in raw.get("authorizations") or []}
        subtype = event.get("subtype")
        from_a_bot = event.get("bot_id") or not event.get("user") or event.get("user") in own
        if from_a_bot or subtype not in (None, "file_share"):
            return None  # our own and other bots' messages, edits, deletions, joins…
        in_dm = event.get("type") == "message" and event.get("channel_type") == "im"
        if not in_dm and event.get("type") != "app_mention":
            return None
        thread = event.get("thread_ts") or (None if in_dm else event.get("ts"))
        return Incoming(
            platform=PLATFORM, user_id=event["user"], event_id=self.event_id(raw),
            kind=UNSUPPORTED if subtype == "file_share" else TEXT,
            timestamp_ms=int(float(event.get("ts") or raw.get("event_time") or 0) * 1000),
            text=_MENTION.sub("", event.get("text") or "").strip(), detail=event["type"],
            address={"channel": event.get("channel"), "thread_ts": thread},
        )

    # -- worker side ------------------------------------------------------
    def send(self, incoming: Incoming, reply: Reply, now_ms: int | None = None) -> str:
        """Post in the conversation's thread; a click also marks its message as answered."""
        address = incoming.address
        with _errors():
            if address.get("clicked_ts"):
                text, label = address.get("clicked_text", ""), address.get("clicked_label", "")
                self._client.chat_update(channel=address["channel"], ts=address["clicked_ts"],
                                         text=text or f"✔ {label}", blocks=_answered_blocks(text, label))
            self._client.chat_postMessage(channel=address["channel"], thread_ts=address.get("thread_ts"),
                                          text=reply.text, blocks=_blocks(reply))
        return "post"

    def push(self, user_id: str, address: dict, text: str, key: str) -> str:
        """An operator's message, in the thread the resident last wrote in (or their DM)."""
        with _errors():
            channel = address.get("channel") or self._client.conversations_open(users=user_id)["channel"]["id"]
            self._client.chat_postMessage(channel=channel, thread_ts=address.get("thread_ts"), text=text)
        return "post"

    def show_loading(self, incoming: Incoming) -> None:
        """Slack bots have no typing indicator for the Events API."""


@contextmanager
def _errors():
    """Slack failures all come out as SendError."""
    try:
        yield
    except SlackApiError as error:
        raise _send_error(error) from None
    except OSError as error:
        raise SendError(f"Slack API unreachable: {error}", permanent=False) from None


def _click(raw: dict, event_id: str) -> Incoming | None:
    action = (raw.get("actions") or [{}])[0]
    message, channel = raw.get("message") or {}, (raw.get("channel") or {}).get("id")
    user = (raw.get("user") or {}).get("id")
    if not user or not channel or "value" not in action:
        return None
    return Incoming(
        platform=PLATFORM, user_id=user, event_id=event_id, kind=POSTBACK,
        timestamp_ms=int(float(action.get("action_ts") or 0) * 1000), data=decode_postback(action["value"]),
        detail="block_actions",
        address={"channel": channel, "thread_ts": message.get("thread_ts") or message.get("ts"),
                 "clicked_ts": message.get("ts"), "clicked_text": message.get("text", ""),
                 "clicked_label": (action.get("text") or {}).get("text", "")},
    )


def _blocks(reply: Reply) -> list[dict]:
    """The text as a section and each choice as a button carrying its postback data."""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": reply.text[:3000]}}]
    buttons = [
        {"type": "button", "action_id": f"choice-{n}", "value": choice.data or encode_postback(a="ask", text=choice.text),
         "text": {"type": "plain_text", "text": (choice.text or choice.label)[:_BUTTON_TEXT_MAX], "emoji": True}}
        for n, choice in enumerate(reply.choices)
    ]
    if buttons:
        blocks.append({"type": "actions", "elements": buttons[:25]})
    return blocks


def _answered_blocks(text: str, label: str) -> list[dict]:
    """The clicked message without its buttons, saying what was chosen."""
    return [{"type": "section", "text": {"type": "mrkdwn", "text": text[:3000] or " "}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"✔ {label}"[:300]}]}]


def _send_error(error: SlackApiError) -> SendError:
    code = (error.response.data or {}).get("error", "") if error.response is not None else ""
    status = error.response.status_code if error.response is not None else 0
    permanent = code in _PERMANENT or (400 <= status < 500 and status != 429)
    if code in _PERMANENT:
        log.error("Slack refused the bot's token or channel (%s): operators must fix the app's settings", code)
    return SendError(f"Slack API {status} {code}", permanent=permanent)
