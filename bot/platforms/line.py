"""LINE: the only module that imports line-bot-sdk.

Web side: verify the signature and turn webhook events into ``Incoming``.
Worker side: send a ``Reply`` as a reply (fresh token) or a push with a retry
key derived from the event id, so a retried job is delivered at most once.
"""
from __future__ import annotations

import logging
import time
import uuid
from contextlib import contextmanager

from linebot.v3 import SignatureValidator
from linebot.v3.messaging import (
    ApiClient,
    ApiException,
    Configuration,
    FlexBox,
    FlexBubble,
    FlexMessage,
    FlexSeparator,
    FlexText,
    MessageAction,
    MessagingApi,
    PostbackAction,
    PushMessageRequest,
    QuickReply,
    QuickReplyItem,
    ReplyMessageRequest,
    ShowLoadingAnimationRequest,
    TextMessage,
)

from bot.messages import (FOLLOW, POSTBACK, TEXT, UNFOLLOW, UNSUPPORTED, Choice, Incoming, Reply, SendError,
                          decode_json, decode_postback, value_at)

log = logging.getLogger(__name__)

PLATFORM = "line"
# The console's "Verify" button sends events with these dummy reply tokens.
_DUMMY_REPLY_TOKENS = {"0" * 32, "f" * 32}
_HANDLED = {"message", "postback", "follow", "unfollow"}
_RETRY_KEY_NAMESPACE = uuid.UUID("8c4f3a52-7d0e-4a8e-9a43-1f6b0c2d9e17")
_LABEL_MAX, _TEXT_MAX, _QUICK_REPLY_MAX, _ALT_TEXT_MAX = 20, 5000, 13, 1500
_ROW_COLOUR = "#1a5fb4"  # a link's blue: the rows are to be tapped


def label(text: str) -> str:
    """LINE cuts quick-reply labels at 20 characters; cut them ourselves, visibly."""
    return text if len(text) <= _LABEL_MAX else text[: _LABEL_MAX - 1] + "…"


def retry_key(event_id: str) -> str:
    """The same event always gets the same X-Line-Retry-Key, so LINE drops a resend."""
    return str(uuid.uuid5(_RETRY_KEY_NAMESPACE, f"{PLATFORM}:{event_id}"))


class LineAdapter:
    """Verify, parse and send for one LINE channel."""

    platform = PLATFORM

    def __init__(self, channel_secret: str, access_token: str, api_base_url: str, reply_token_max_age_s: int = 50):
        self._validator = SignatureValidator(channel_secret)
        self._configuration = Configuration(host=api_base_url.rstrip("/"), access_token=access_token)
        self._reply_token_max_age_ms = reply_token_max_age_s * 1000

    # -- web side ---------------------------------------------------------
    def verify(self, body: bytes, headers) -> bool:
        signature = headers.get("X-Line-Signature", "")
        return bool(signature) and self._validator.validate(body.decode("utf-8", "replace"), signature)

    @staticmethod
    def decode(body: bytes):
        return decode_json(body)

    @staticmethod
    def handshake(payload) -> None:
        """LINE's Verify button sends ordinary (dummy) events: nothing special to answer."""
        return None

    def events(self, payload) -> list[dict] | None:
        """The raw events of a webhook body, or None when the body is not LINE's shape."""
        if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
            return None
        events = payload["events"]
        return events if all(isinstance(event, dict) for event in events) else None

    def event_id(self, raw: dict) -> str:
        return value_at(raw, "webhookEventId", str, required=True)

    def parse(self, raw: dict) -> Incoming | None:
        """An ``Incoming`` for events we handle; None for the rest (answered 200, not queued); Malformed for an
        event of any type whose fields are not LINE's shape."""
        kind = value_at(raw, "type", str, required=True)
        reply_token = value_at(raw, "replyToken", str)
        if reply_token in _DUMMY_REPLY_TOKENS:
            return None
        common = dict(platform=PLATFORM, user_id=value_at(raw, "source.userId", str), event_id=self.event_id(raw),
                      timestamp_ms=value_at(raw, "timestamp", int, required=True), reply_token=reply_token,
                      detail=kind)
        if kind not in _HANDLED or not common["user_id"]:
            return None  # beacons, joins, types LINE adds later; group events without a user
        if kind == "message":
            message_type = value_at(raw, "message.type", str, required=True)
            if message_type == "text":
                return Incoming(kind=TEXT, text=value_at(raw, "message.text", str, required=True), **common)
            return Incoming(kind=UNSUPPORTED, **{**common, "detail": f"message/{message_type}"})
        if kind == "postback":
            data = decode_postback(value_at(raw, "postback.data", str, required=True))
            return Incoming(kind=POSTBACK, data=data, **common)
        return Incoming(kind=FOLLOW if kind == "follow" else UNFOLLOW, **common)

    # -- worker side ------------------------------------------------------
    @contextmanager
    def _api(self):
        """A MessagingApi whose failures all come out as SendError."""
        with ApiClient(self._configuration) as client:
            try:
                yield MessagingApi(client)
            except ApiException as error:
                raise _send_error(error) from None
            except OSError as error:  # connection refused, reset, timeout
                raise SendError(f"LINE API unreachable: {error}", permanent=False) from None

    def method(self, incoming: Incoming, interrupted: str | None, now_ms: int | None = None) -> str | None:
        """Reply while the token is fresh (free, and LINE refuses a token used twice); otherwise push with a retry
        key (LINE drops a second push with the same key).  None when an ``interrupted`` reply may have arrived
        and its token has gone stale: nothing can tell, and a push could be a second answer."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        if incoming.reply_token and now_ms - incoming.timestamp_ms < self._reply_token_max_age_ms:
            return "reply"
        return None if interrupted == "reply" else "push"

    def send(self, incoming: Incoming, reply: Reply, method: str, resend: bool = False) -> str:
        """Send ``reply`` by ``method``; returns how it went out; raises SendError.  A refused reply token means
        the interrupted attempt used it (``resend``), or that it expired sooner than we allow: push instead."""
        message = self._message(reply)
        if method == "reply":
            try:
                with self._api() as api:
                    api.reply_message(ReplyMessageRequest(reply_token=incoming.reply_token, messages=[message]))
                return "reply"
            except _ReplyTokenRefused:
                if resend:
                    raise SendError("sent by the interrupted attempt (LINE refused its reply token)",
                                    permanent=True, delivered=True) from None
        with self._api() as api:
            api.push_message(PushMessageRequest(to=incoming.user_id, messages=[message]),
                             x_line_retry_key=retry_key(incoming.event_id))
        return "push"

    #: An operator's push can be sent again after an interrupted attempt: the retry key makes LINE drop a second.
    pushes_once = True

    def push(self, user_id: str, address: dict, text: str, key: str) -> str:
        """An operator's message, sent at most once however often the job runs (retry key)."""
        with self._api() as api:
            api.push_message(PushMessageRequest(to=user_id, messages=[TextMessage(text=text[:_TEXT_MAX])]),
                             x_line_retry_key=retry_key(key))
        return "push"

    def show_loading(self, incoming: Incoming, seconds: int) -> None:
        """The typing dots; best effort, a failure here must not stop the answer."""
        try:
            with self._api() as api:
                api.show_loading_animation(ShowLoadingAnimationRequest(chat_id=incoming.user_id,
                                                                       loading_seconds=seconds))
        except SendError as error:
            log.warning("loading animation failed for event %s: %s", incoming.event_id, error)

    @staticmethod
    def _message(reply: Reply) -> TextMessage | FlexMessage:
        items = [QuickReplyItem(action=_action(choice)) for choice in reply.choices[:_QUICK_REPLY_MAX]]
        quick_reply = QuickReply(items=items) if items else None
        if reply.lead:
            return FlexMessage(alt_text=reply.text[:_ALT_TEXT_MAX], contents=_rows(reply), quick_reply=quick_reply)
        return TextMessage(text=reply.text[:_TEXT_MAX], quick_reply=quick_reply)


def _action(choice: Choice) -> PostbackAction | MessageAction:
    if choice.data:
        return PostbackAction(label=label(choice.label), data=choice.data, display_text=choice.text or None)
    return MessageAction(label=label(choice.label), text=choice.text)


def _rows(reply: Reply) -> FlexBubble:
    """The lead, then each choice whole on a row of its own that answers a tap (a quick reply's label is cut at
    20 characters: "1. How do I registe…"); the alt text, the reply in plain words, is what notifications show."""
    rows = [FlexText(text=reply.lead, wrap=True, weight="bold", size="sm")]
    for choice in reply.choices:
        rows.append(FlexSeparator(margin="md"))
        rows.append(FlexBox(layout="vertical", action=_action(choice), paddingTop="8px", paddingBottom="4px",
                            contents=[FlexText(text=choice.label, wrap=True, size="sm", color=_ROW_COLOUR)]))
    return FlexBubble(body=FlexBox(layout="vertical", contents=rows))


class _ReplyTokenRefused(SendError):
    """LINE's 400 "Invalid reply token": used already, or expired."""


def _send_error(error: ApiException) -> SendError:
    """409 means LINE already accepted this retry key: delivered, not failed."""
    status = error.status or 0
    if status == 409:
        return SendError("already delivered (retry key seen by LINE)", permanent=True, delivered=True)
    body = error.body.decode("utf-8", "replace") if isinstance(error.body, bytes) else str(error.body or "")
    if status == 400 and "Invalid reply token" in body[:500]:
        return _ReplyTokenRefused("LINE refused the reply token", permanent=True)
    permanent = 400 <= status < 500 and status != 429
    return SendError(f"LINE API {status}: {body[:200]!r}", permanent=permanent)
