"""Signed bodies of the wrong shape get 400 and queue nothing; long messages are answered.

A 500 makes LINE and Slack send the same bad body again, so the fuzz below posts thousands of validly
signed, malformed bodies (seeded: every run posts the same ones) and asserts that none gets a 500.
"""
import json
import logging
import random
import re
from urllib.parse import quote, urlencode

import pytest

from bot.local_chat import sign
from config.settings import Settings
from tests.conftest import (CHANNEL_SECRET, line_event, post_events, same_policies, slack_click, slack_message,
                            slack_post)

SECRET_TEXT = "秘密の相談 090-1234-5678"  # must never reach the log
_PLACEHOLDER = re.compile(r'"@@(deep|deepobject|bigint):(\d+)@@"')
JUNK = [None, True, False, 0, -1, 1.5, -0.0, 1e308, float("inf"), float("nan"), 2**63, 10**400,
        "", " ", "0", "abc", "\u0000", "😀", "\ud800", "ｑｒ\u200b", "x" * 10_000, "<@U123>", "message", "text",
        "block_actions", "event_callback", "1700000000.000100", "nan", "inf", "1e400", "-1", "0" * 32,
        [], {}, [1], [{}], {"type": "text"}, [[[]]], {"": None}, {"id": {"id": []}},
        "@@deep:64@@", "@@deep:200@@", "@@deep:950@@", "@@deep:100000@@", "@@deepobject:990@@",
        "@@deepobject:100000@@", "@@bigint:5000@@"]


def to_json(value) -> str:
    """JSON text of ``value`` with the placeholders expanded: nesting and integers json.dumps cannot write."""
    def expand(match):
        kind, n = match.group(1), int(match.group(2))
        if kind == "bigint":
            return "9" * n
        if kind == "deep":
            return "[" * n + "]" * n
        return '{"a":' * n + "1" + "}" * n

    return _PLACEHOLDER.sub(expand, json.dumps(value))


def paths(value, prefix=()):
    """Every path to a field or list item inside ``value``."""
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, child in items:
        yield prefix + (key,)
        yield from paths(child, prefix + (key,))


def mutate(rng, value):
    """``value`` (a copy) with one to three fields dropped, retyped, nested deep or added."""
    value = json.loads(json.dumps(value))
    for _ in range(rng.randint(1, 3)):
        choices = list(paths(value))
        if not choices:
            return value
        *parent_path, key = rng.choice(choices)
        parent = value
        for step in parent_path:
            parent = parent[step]
        action = rng.choice(["drop", "retype", "retype", "add"])
        if action == "drop":
            del parent[key]
        elif action == "retype":
            parent[key] = rng.choice(JUNK)
        elif isinstance(parent[key], dict):
            parent[key][rng.choice(["type", "text", "id", "user", "extra"])] = rng.choice(JUNK)
    return value


def line_bases(n: int) -> list[dict]:
    """One event of each kind we answer or ignore, with ids of their own: the fuzz's starting points."""
    kinds = ["text", "text", "sticker", "postback", "follow", "unfollow", "beacon"]
    events = []
    for i, kind in enumerate(kinds):
        event = line_event(kind="text" if kind == "beacon" else kind, text=SECRET_TEXT, data="a=select&faq=x",
                           event_id=f"FUZZ{n:05d}{i}")
        if kind == "beacon":
            event.update(type="beacon", beacon={"hwid": "d41d8cd98f", "type": "enter"})
        events.append(event)
    return events


def line_bodies(rng, count: int):
    """(label, body) of validly signed LINE webhook bodies of the wrong shape, or of odd events we ignore."""
    for n in range(count):
        bases = line_bases(n)
        shape = rng.choice(["event"] * 6 + ["mixed", "mixed", "not-an-event", "events", "body", "bytes"])
        if shape == "event":
            body = to_json({"destination": "Ubot", "events": [mutate(rng, rng.choice(bases))]})
        elif shape == "mixed":  # good events first: the bad one must stop them all from being queued
            events = bases[:2] + [mutate(rng, rng.choice(bases))]
            rng.shuffle(events)
            body = to_json({"destination": "Ubot", "events": events})
        elif shape == "not-an-event":
            body = to_json({"destination": "Ubot", "events": [bases[0], rng.choice(JUNK)]})
        elif shape == "events":
            body = to_json({"destination": "Ubot", "events": rng.choice(JUNK)})
        elif shape == "body":
            body = to_json(rng.choice([rng.choice(JUNK), mutate(rng, {"destination": "Ubot", "events": bases})]))
        else:
            body = rng.choice([b"", b"{", b"\xff\xfe{}", "\ufeff{}".encode(), b'{"events": [}',
                               json.dumps({"events": [bases[0]]}).encode()[: rng.randint(1, 200)],
                               to_json({"events": [bases[0]]}).encode().replace(b"Uresident1", b"U\xc3\x28")])
        yield shape, body


def slack_bodies(rng, count: int):
    """(label, path, body) of validly signed Slack requests of the wrong shape, or of odd events we ignore."""
    for n in range(count):
        message = slack_message(SECRET_TEXT)
        message["event_id"] = f"EvFUZZ{n:05d}"
        mention = slack_message(f"<@UBOTSELF> {SECRET_TEXT}", channel="C1", channel_type="channel",
                                event_type="app_mention")
        mention["event_id"] = f"EvFUZZM{n:05d}"
        edited = slack_message("", subtype="message_changed", message={"text": SECRET_TEXT, "user": "U1"})
        joined = slack_message("", event_type="team_join", user={"id": "U2", "name": "new"})
        click = slack_click("a=select&faq=visitor-register", user=f"UFUZZ{n}")
        shape = rng.choice(["event"] * 5 + ["click"] * 5 + ["handshake", "form", "envelope"])
        if shape == "event":
            yield shape, "/slack/events", to_json(mutate(rng, rng.choice([message, mention, edited, joined])))
        elif shape == "click":
            yield shape, "/slack/interactions", urlencode({"payload": to_json(mutate(rng, click))})
        elif shape == "handshake":
            handshake = rng.choice([{"type": "url_verification", "token": "t", "challenge": "c"},
                                    {"type": "ssl_check"}])
            yield shape, "/slack/events", to_json(mutate(rng, handshake))
        elif shape == "form":
            yield shape, "/slack/interactions", rng.choice([
                "payload=", "payload=%ZZ", "payload=%FF%FE", "payload=" + quote(rng.choice(["{", "[]", "null", "1"])),
                "payload=" + quote(to_json(rng.choice(JUNK))), "payload=&payload=" + quote(json.dumps(click)),
                "payload=" + quote(to_json({"type": "block_actions", "actions": rng.choice(JUNK)})),
                "payload=" + quote(json.dumps(click))[: rng.randint(1, 300)]])
        else:
            yield shape, "/slack/events", to_json(rng.choice([rng.choice(JUNK), {"type": rng.choice(JUNK)},
                                                             {**message, "type": rng.choice(JUNK)}]))


def post_line(client, body: bytes | str):
    """POST ``body`` with the signature LINE would give it (LINE signs bytes; our check reads them as UTF-8)."""
    raw = body if isinstance(body, bytes) else body.encode()
    return client.post("/callback", data=raw, headers={"X-Line-Signature": sign(raw.decode("utf-8", "replace"),
                                                                                 CHANNEL_SECRET)})


def check(app, caplog, requests) -> dict:
    """Send every request; a 400 must queue nothing, nothing may get a 5xx; returns the count of each status."""
    queue = app.extensions["bot"].queue
    statuses, failures = {}, []
    caplog.set_level(logging.INFO)
    for label, send in requests:
        before = queue.count
        response = send()
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code >= 500:
            failures.append(f"{label}: {response.status_code}")
        elif response.status_code == 400:
            assert isinstance(response.get_json()["error"], str)
            if queue.count != before:
                failures.append(f"{label}: 400 but queued")
    assert not failures, f"{len(failures)} of {sum(statuses.values())} failed, e.g. {failures[:5]}"
    assert set(statuses) <= {200, 400, 413}, statuses  # 413: a deep form payload over 1 MiB
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert "秘密" not in caplog.text and "090-1234-5678" not in caplog.text
    return statuses


def test_thousands_of_malformed_line_bodies_get_400_or_200_never_500(app, client, caplog):
    rng = random.Random(20240607)
    requests = [(label, lambda body=body: post_line(client, body)) for label, body in line_bodies(rng, 3200)]
    statuses = check(app, caplog, requests)
    assert statuses[400] > 2000 and statuses[200] > 100  # the fuzz reaches both: refused and ignored


def test_thousands_of_malformed_slack_requests_get_400_or_200_never_500(app, client, caplog):
    rng = random.Random(20240608)
    requests = [(label, lambda path=path, body=body: slack_post(client, body, path=path))
                for label, path, body in slack_bodies(rng, 1800)]
    statuses = check(app, caplog, requests)
    assert statuses[400] > 900 and statuses[200] > 100


@pytest.mark.parametrize("field,value,reason", [
    ("type", None, "event 1: type is missing"),
    ("replyToken", ["x"], "event 1: replyToken must be a string"),
    ("timestamp", "1700000000000", "event 1: timestamp must be an integer"),
    ("source", "Uresident1", "event 1: source must be an object"),
    ("message", {"type": "text", "text": 5}, "event 1: message.text must be a string"),
])
def test_a_malformed_line_event_refuses_the_whole_body_with_its_reason(app, client, caplog, field, value, reason):
    bad = line_event(text="QRコードとは？")
    if value is None:
        del bad[field]
    else:
        bad[field] = value
    response = post_events(client, line_event(text="QRコードとは？"), bad)
    assert response.status_code == 400 and response.get_json() == {"error": reason}
    assert app.extensions["bot"].queue.count == 0
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert reason in warning.getMessage() and warning.exc_info is None


def test_a_body_nested_100000_levels_deep_gets_400(app, client):
    body = '{"destination": "Ubot", "events": [' + "[" * 100_000 + "]" * 100_000 + "]}"
    response = post_line(client, body)
    assert response.status_code == 400 and "nested" in response.get_json()["error"]


@pytest.mark.parametrize("change,reason", [
    (lambda click: click.update(actions={}), "actions must be a list"),
    (lambda click: click["actions"][0].update(action_ts=1.5), "actions.0.action_ts must be a string"),
    (lambda click: click["actions"][0].update(action_ts="soon"), "actions.0.action_ts must be a Slack timestamp"),
    (lambda click: click.update(user="USLACK1"), "user must be an object"),
])
def test_a_malformed_click_gets_400_with_its_reason(app, client, change, reason):
    click = slack_click("a=select&faq=visitor-register")
    change(click)
    response = slack_post(client, urlencode({"payload": json.dumps(click)}), path="/slack/interactions")
    assert response.status_code == 400 and response.get_json() == {"error": f"event 0: {reason}"}
    assert app.extensions["bot"].queue.count == 0


def test_an_unforeseen_shape_error_in_an_adapter_is_still_a_400(app, client, monkeypatch, caplog):
    def broken(raw):
        raise TypeError("an adapter check we did not write")

    monkeypatch.setattr(app.extensions["bot"].adapters["line"], "parse", broken)
    response = post_events(client, line_event(text="QRコードとは？"))
    assert response.status_code == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.fixture
def nlu_reads(worker, monkeypatch):
    """The texts the worker's NLU ranked."""
    import nlu.engine

    texts, rank = [], nlu.engine.rank_and_decide

    def spy(retriever, policies, reranker, top_k, text, lang):
        texts.append(text)
        return rank(retriever, policies, reranker, top_k, text, lang)

    monkeypatch.setattr(nlu.engine, "rank_and_decide", spy)
    return texts


def test_a_40000_character_slack_message_is_answered(client, worker, slack_api, nlu_reads):
    text = ("QRコードが読み取れません。" * 3000)[:40_000]
    assert slack_post(client, json.dumps(slack_message(text))).status_code == 200
    worker.run()
    assert [sent.body["channel"] for sent in slack_api.sent()] == ["D0001"]
    assert [len(read) for read in nlu_reads] == [Settings().nlu_max_chars]


def test_a_5000_character_line_message_is_answered(client, worker, line_api, nlu_reads, monkeypatch):
    monkeypatch.setattr(worker.dialogue.nlu, "policies", same_policies(2.0, 0.0, 0.0))  # "did you mean…" only
    text = ("I cannot scan the QR code at the entrance. " * 200)[:5000]
    assert post_events(client, line_event(text=text, user="Ulong")).status_code == 200
    worker.run()
    assert len(line_api.sent()) == 1
    assert [len(read) for read in nlu_reads] == [Settings().nlu_max_chars]
    # operators get the question as the NLU read it (embedding all 5,000 characters takes seconds)
    assert [len(item["text"]) for item in worker.unanswered.items()] == [Settings().nlu_max_chars]
    [logged] = [entry for entry in worker.convlog.conversation("line", "Ulong") if entry.get("direction") == "in"]
    assert logged["text"] == text
