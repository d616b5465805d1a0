"""Platform-neutral messages: what adapters parse to and send from.

The dialogue core deals only in these; each platform adapter turns its events
into ``Incoming`` and a ``Reply`` into its own SDK calls.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

TEXT, POSTBACK, FOLLOW, UNFOLLOW, UNSUPPORTED = "text", "postback", "follow", "unfollow", "unsupported"


@dataclass(frozen=True)
class Incoming:
    platform: str
    user_id: str
    event_id: str
    kind: str  # TEXT, POSTBACK, FOLLOW, UNFOLLOW or UNSUPPORTED (stickers, images, audio…)
    timestamp_ms: int
    text: str = ""
    data: dict = field(default_factory=dict)  # decoded postback data
    reply_token: str | None = None
    detail: str = ""  # the platform's own event/message type, for logs
    address: dict = field(default_factory=dict)  # where to answer, in the platform's terms (channel, thread…)


@dataclass(frozen=True)
class Choice:
    """A tappable option: sends ``data`` back as a postback, or ``text`` as if typed."""

    label: str
    data: str = ""
    text: str = ""


@dataclass(frozen=True)
class Reply:
    text: str
    choices: tuple[Choice, ...] = ()


def encode_postback(**values) -> str:
    return urlencode(values)


def decode_postback(data: str) -> dict:
    return dict(parse_qsl(data or "", keep_blank_values=True))


class SendError(Exception):
    """The one outbound error type: ``permanent`` ones are logged for operators, others retried."""

    def __init__(self, message: str, permanent: bool, delivered: bool = False):
        super().__init__(message)
        self.permanent = permanent
        self.delivered = delivered
