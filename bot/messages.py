"""Platform-neutral messages: what adapters parse to and send from.

The dialogue core deals only in these; each platform adapter turns its events
into ``Incoming`` and a ``Reply`` into its own SDK calls, refusing a body
that is not its platform's shape with ``Malformed`` (``decode_json``, ``value_at``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode

TEXT, POSTBACK, FOLLOW, UNFOLLOW, UNSUPPORTED = "text", "postback", "follow", "unfollow", "unsupported"
_MAX_NESTING = 64  # LINE's and Slack's bodies nest about ten levels
_KINDS = {str: "a string", int: "an integer", dict: "an object", list: "a list"}


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
    """``text`` is the whole reply in plain words.  With a ``lead``, the choices are whole questions a resident
    reads before tapping ("did you mean…"): a platform that can shows the lead above them as rows (LINE's Flex
    Message), the choices staying as shortcuts."""

    text: str
    choices: tuple[Choice, ...] = ()
    lead: str = ""


def encode_postback(**values) -> str:
    return urlencode(values)


def decode_postback(data: str) -> dict:
    return dict(parse_qsl(data or "", keep_blank_values=True))


class Malformed(ValueError):
    """A signed body that is not the platform's shape: refused with 400, since a 500 makes the platform resend it."""


def decode_json(text: str | bytes):
    """A webhook body's JSON, refused when it nests deeper than any platform's: json and pickle (the queue) recurse."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise Malformed(f"body nested deeper than {_MAX_NESTING} levels") from None
    except ValueError:  # not JSON, not UTF-8, an integer of over 4,300 digits
        raise Malformed("body is not valid JSON") from None
    level, depth = [data], 0
    while level := [value for value in level if isinstance(value, (dict, list))]:  # level by level: no recursion
        depth += 1
        if depth > _MAX_NESTING:
            raise Malformed(f"body nested deeper than {_MAX_NESTING} levels")
        level = [item for value in level for item in (value.values() if isinstance(value, dict) else value)]
    return data


def value_at(event: dict, path: str, kind: type, required: bool = False):
    """The value at ``path`` ("message.text", "actions.0.value") of a decoded event if it is a ``kind`` (a bool is
    no integer, a string must be valid UTF-8); None where it is absent or null and not ``required``; otherwise
    Malformed, naming the path, so a refusal says what to fix."""
    value, steps = event, path.split(".")
    for n, step in enumerate(steps):
        container = list if step.isdigit() else dict
        if not isinstance(value, container):
            raise Malformed(f"{'.'.join(steps[:n])} must be {_KINDS[container]}")
        value = value.get(step) if container is dict else value[int(step)] if int(step) < len(value) else None
        if value is None:
            if required:
                raise Malformed(f"{path} is missing")
            return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise Malformed(f"{path} must be {_KINDS[kind]}")
    if kind is str:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800" in the JSON): Redis could not store it
            raise Malformed(f"{path} is not valid Unicode") from None
    return value


class SendError(Exception):
    """The one outbound error type: ``permanent`` ones are logged for operators, others retried."""

    def __init__(self, message: str, permanent: bool, delivered: bool = False):
        super().__init__(message)
        self.permanent = permanent
        self.delivered = delivered
