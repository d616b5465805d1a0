"""Shared fixtures: a real (embedded) Redis, a fake LINE API on loopback,
the real NLU loaded once, the app built with test settings, and a burst worker.
"""
from __future__ import annotations

import json
import time
import uuid

import re

import pytest
from rq import SimpleWorker
from werkzeug.security import generate_password_hash

from bot.app import create_app
from bot.local_chat import sign
from bot.redis_conn import start_embedded, url_of
from bot.worker import build_worker_services
from config.settings import PROJECT_ROOT, Settings
from nlu import LANGUAGES, Policy, build_nlu
from tests.fake_apis import FakeLineApi, FakeSlackApi

CHANNEL_SECRET = "test-channel-secret"
ACCESS_TOKEN = "test-access-token"
SLACK_SECRET = "test-slack-signing-secret"
BOT_USER = "UBOTSELF"
OPERATOR_PASSWORD = "correct horse battery staple"
OPERATORS = ",".join(f"{name}:{generate_password_hash(OPERATOR_PASSWORD)}" for name in ("sato", "suzuki"))


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = start_embedded(str(tmp_path_factory.mktemp("redis") / "test.db"))
    yield server
    server.shutdown()


@pytest.fixture
def redis(redis_server):
    redis_server.flushall()
    return redis_server


@pytest.fixture(scope="session")
def fake_line():
    api = FakeLineApi()
    yield api
    api.close()


@pytest.fixture
def line_api(fake_line):
    fake_line.reset()
    return fake_line


@pytest.fixture(scope="session")
def fake_slack():
    api = FakeSlackApi()
    yield api
    api.close()


@pytest.fixture
def slack_api(fake_slack):
    fake_slack.reset()
    return fake_slack


@pytest.fixture
def settings(redis_server, fake_line, fake_slack) -> Settings:
    return Settings(
        mode="local",
        line_channel_secret=CHANNEL_SECRET,
        line_channel_access_token=ACCESS_TOKEN,
        line_api_base_url=fake_line.url,
        slack_signing_secret=SLACK_SECRET,
        slack_bot_token="xoxb-test",
        slack_api_base_url=fake_slack.url + "/api/",
        redis_url=url_of(redis_server),
        faq_dir=str(PROJECT_ROOT / "faq_data"),
        job_retry_intervals=(0,),
        console_operators=OPERATORS,
        secret_key="test-session-key",
        loading_animation_after_ms=5000,
    )


@pytest.fixture(scope="session")
def nlu(tmp_path_factory):
    return build_nlu(Settings(nlu_cache_dir=str(tmp_path_factory.mktemp("embeddings"))))


@pytest.fixture
def app(settings, redis):
    return create_app(settings, redis=redis)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def worker(settings, redis, nlu, line_api, slack_api):
    """Services with the dialogue installed; ``worker.run()`` drains the queue once."""
    services = build_worker_services(settings, redis=redis, nlu=nlu)
    services.run = lambda: SimpleWorker([services.queue], connection=redis).work(burst=True)
    return services


def sign_in(client, name="sato", password=OPERATOR_PASSWORD):
    """Sign in through the login form, CSRF token included."""
    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    return client.post("/console/login", data={"name": name, "password": password, "csrf_token": token})


@pytest.fixture
def operator(client):
    """The test client, signed in to the console as "sato"."""
    assert sign_in(client).status_code == 302
    return client


def same_policies(answer: float, margin: float, clarify: float) -> dict:
    """One policy for every language, as a test that overrides the NLU_* thresholds sets it."""
    return {lang: Policy(answer, margin, 0.0, clarify) for lang in LANGUAGES}


def form(client, **values):
    """A console form as the page posts it: with the session's CSRF token."""
    with client.session_transaction() as session:
        token = session.get("csrf")
    if token is None:  # a fresh session gets its token with the first page it renders
        client.get("/console/waiting")
        return form(client, **values)
    return {"csrf_token": token, **values}


def line_event(kind="text", text="", user="Uresident1", data="", age_s=0.0, event_id=None, redelivery=False):
    """A LINE webhook event as LINE sends it."""
    event = {
        "type": "message" if kind in ("text", "sticker") else kind,
        "mode": "active",
        "timestamp": int((time.time() - age_s) * 1000),
        "source": {"type": "user", "userId": user},
        "webhookEventId": event_id or uuid.uuid4().hex[:26].upper(),
        "deliveryContext": {"isRedelivery": redelivery},
        "replyToken": uuid.uuid4().hex,
    }
    if kind == "text":
        event["message"] = {"type": "text", "id": "1", "text": text, "quoteToken": "q"}
    elif kind == "sticker":
        event["message"] = {"type": "sticker", "id": "2", "packageId": "1", "stickerId": "1",
                            "stickerResourceType": "STATIC", "quoteToken": "q"}
    elif kind == "postback":
        event["postback"] = {"data": data}
    elif kind == "follow":
        event["follow"] = {"isUnblocked": False}
    elif kind == "unfollow":
        del event["replyToken"]
    return event


def post_events(client, *events, secret=CHANNEL_SECRET, signature=None):
    """POST a webhook body signed like LINE signs it."""
    body = json.dumps({"destination": "Ubot", "events": list(events)})
    return client.post(
        "/callback",
        data=body,
        headers={"X-Line-Signature": signature if signature is not None else sign(body, secret),
                 "Content-Type": "application/json"},
    )


def slack_message(text, user="USLACK1", channel="D0001", channel_type="im", event_type="message", **extra):
    """A Slack Events API envelope as Slack sends it."""
    event = {"type": event_type, "user": user, "text": text, "ts": f"{time.time():.6f}", "channel": channel,
             "channel_type": channel_type, "event_ts": f"{time.time():.6f}", **extra}
    return {"type": "event_callback", "team_id": "T1", "api_app_id": "A1", "event": event,
            "event_id": "Ev" + uuid.uuid4().hex[:10].upper(), "event_time": int(time.time()),
            "authorizations": [{"user_id": BOT_USER, "is_bot": True}]}


def slack_click(value, label="👍", user="USLACK1", channel="D0001", message_ts="1700000000.000100",
                thread_ts=None):
    """A block_actions payload: a resident pressed one of our buttons."""
    message = {"ts": message_ts, "text": "Did you mean…", **({"thread_ts": thread_ts} if thread_ts else {})}
    return {"type": "block_actions", "user": {"id": user}, "channel": {"id": channel}, "message": message,
            "actions": [{"action_id": "choice-0", "value": value, "action_ts": f"{time.time():.6f}",
                         "text": {"type": "plain_text", "text": label}}]}


def slack_post(client, body: str, path="/slack/events", secret=SLACK_SECRET, timestamp=None, headers=None):
    """POST a body signed like Slack signs it (with the real slack_sdk verifier's scheme)."""
    from slack_sdk.signature import SignatureVerifier

    timestamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(secret).generate_signature(timestamp=timestamp, body=body)
    content_type = "application/x-www-form-urlencoded" if body.startswith("payload=") else "application/json"
    return client.post(path, data=body, headers={"X-Slack-Request-Timestamp": timestamp,
                                                 "X-Slack-Signature": signature, "Content-Type": content_type,
                                                 **(headers or {})})


def write_json(path, data):
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


@pytest.fixture
def tiny_faq(tmp_path):
    """Five English entries in both corpus forms, four queries (one unanswerable), two OOS questions."""
    corpus = {
        "1": "Question: How do I renew my passport?\nAnswer: Bring your old passport and a photo to city hall.",
        "2": "Question: When is garbage collected?\nAnswer: Burnable garbage goes out on Mondays and Thursdays.",
        "3": {"question": "Where can I park my bicycle?", "answer": "Use the bicycle parking by the station."},
        "4": {"question": "How do I register my dog?", "answer": "Dogs are registered at the health center."},
        "5": {"question": "What are the library opening hours?", "answer": "The library opens from 9 to 7."},
    }
    queries = {"q1": "passport renewal", "q2": "which day is trash pickup", "q3": "dog registration",
               "q4": "no grades for this one"}
    qrels = {"q1": {"1": 2}, "q2": {"2": 2, "5": 1}, "q3": {"4": 1}, "q4": {"5": 0}}
    return {name: write_json(tmp_path / f"{name}.json", data) for name, data in
            (("corpus", corpus), ("queries", queries), ("qrels", qrels),
             ("oos", ["book me a flight to paris", "what is the weather tomorrow"]))}
