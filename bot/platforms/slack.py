"""Slack: the only module that imports slack_sdk.

Web side: verify the signing secret, answer Slack's handshakes, and turn
Events API envelopes and button clicks into ``Incoming``.  Worker side: post
the reply in the right thread with Block Kit buttons, and mark a clicked
message as answered.
"""
from __future__ import annotations

import logging
import re
from contextlib import contextmanager
from urllib.parse import parse_qs

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier

from bot.messages import (POSTBACK, TEXT, UNSUPPORTED, Incoming, Malformed, Reply, SendError, decode_json,
                          decode_postback, encode_postback, value_at)

log = logging.getLogger(__name__)

PLATFORM = "slack"
_MENTION = re.compile(r"<@[A-Z0-9]+>")
_TIMESTAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")  # "1700000000.000100"
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
            payload = parse_qs(body.decode("utf-8", "replace")).get("payload")
            if not payload:
                raise Malformed("form has no payload")
            return decode_json(payload[0])
        if body.startswith(b"ssl_check="):
            return {"type": "ssl_check"}
        return decode_json(body)

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
            user = value_at(raw, "user.id", str, required=True)
            return f"action-{user}-{value_at(raw, 'actions.0.action_ts', str, required=True)}"
        return value_at(raw, "event_id", str, required=True)

    def parse(self, raw: dict) -> Incoming | None:
        """An ``Incoming`` for residents' messages and clicks; None for the rest (answered 200, not queued);
        Malformed when the fields we read are not Slack's shape."""
        if raw.get("type") == "block_actions":
            return _click(raw, self.event_id(raw))
        event_id, kind = self.event_id(raw), value_at(raw, "event.type", str, required=True)
        subtype = value_at(raw, "event.subtype", str)
        if kind not in ("message", "app_mention") or subtype not in (None, "file_share"):
            return None  # other events (their fields differ: team_join's user is an object), edits, deletions…
        user, own = value_at(raw, "event.user", str), value_at(raw, "authorizations.0.user_id", str)
        if value_at(raw, "event.bot_id", str) or not user or user == own:
            return None  # our own and other bots' messages
        in_dm = kind == "message" and value_at(raw, "event.channel_type", str) == "im"
        if not in_dm and kind != "app_mention":
            return None  # plain channel messages
        ts = value_at(raw, "event.ts", str, required=True)
        return Incoming(
            platform=PLATFORM, user_id=user, event_id=event_id, kind=UNSUPPORTED if subtype == "file_share" else TEXT,
            timestamp_ms=_milliseconds(ts, "event.ts"), detail=kind,
            text=_MENTION.sub("", value_at(raw, "event.text", str) or "").strip(),
            address={"channel": value_at(raw, "event.channel", str, required=True),
                     "thread_ts": value_at(raw, "event.thread_ts", str) or (None if in_dm else ts)},
        )

    # -- worker side ------------------------------------------------------
    def method(self, incoming: Incoming, interrupted: str | None, now_ms: int | None = None) -> str | None:
        """Post; but after an ``interrupted`` post nothing can tell whether it arrived (Slack has no retry key)."""
        return None if interrupted else "post"

    #: After an interrupted operator's post nothing can tell whether it arrived.
    pushes_once = False

    def send(self, incoming: Incoming, reply: Reply, method: str = "post", resend: bool = False) -> str:
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

    def show_loading(self, incoming: Incoming, seconds: int) -> None:
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
    """A press of one of our buttons; None for other block actions (no value: menus; no channel: modals)."""
    channel, value = value_at(raw, "channel.id", str), value_at(raw, "actions.0.value", str)
    timestamp_ms = _milliseconds(value_at(raw, "actions.0.action_ts", str, required=True), "actions.0.action_ts")
    if not channel or value is None:
        return None
    clicked_ts = value_at(raw, "message.ts", str)
    return Incoming(
        platform=PLATFORM, user_id=value_at(raw, "user.id", str, required=True), event_id=event_id, kind=POSTBACK,
        timestamp_ms=timestamp_ms, data=decode_postback(value), detail="block_actions",
        address={"channel": channel, "thread_ts": value_at(raw, "message.thread_ts", str) or clicked_ts,
                 "clicked_ts": clicked_ts, "clicked_text": value_at(raw, "message.text", str) or "",
                 "clicked_label": value_at(raw, "actions.0.text.text", str) or ""},
    )


def _milliseconds(ts: str, path: str) -> int:
    """A Slack timestamp ("1700000000.000100", seconds) in milliseconds; Malformed when it is none."""
    if not _TIMESTAMP.fullmatch(ts):
        raise Malformed(f"{path} must be a Slack timestamp")
    return int(float(ts) * 1000)


def _blocks(reply: Reply) -> list[dict]:
    """The text as a section and each choice as a button carrying its postback data, labelled as the text
    numbers it ("Tap a number")."""
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": reply.text[:3000]}}]
    buttons = [
        {"type": "button", "action_id": f"choice-{n}", "value": choice.data or encode_postback(a="ask", text=choice.text),
         "text": {"type": "plain_text", "text": choice.label[:_BUTTON_TEXT_MAX], "emoji": True}}
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
