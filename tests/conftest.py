"""Shared fixtures: a real (embedded) Redis, a fake LINE API on loopback,
the real NLU loaded once, the app built with test settings, and a burst worker.
"""
from __future__ import annotations

import json
import time
import uuid

import pytest
from rq import SimpleWorker

from bot.app import create_app
from bot.local_chat import sign
from bot.redis_conn import start_embedded, url_of
from bot.worker import build_worker_services
from config.settings import PROJECT_ROOT, Settings
from nlu import build_nlu
from tests.fake_line_api import FakeLineApi

CHANNEL_SECRET = "test-channel-secret"
ACCESS_TOKEN = "test-access-token"


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


@pytest.fixture
def settings(redis_server, fake_line) -> Settings:
    return Settings(
        mode="local",
        line_channel_secret=CHANNEL_SECRET,
        line_channel_access_token=ACCESS_TOKEN,
        line_api_base_url=fake_line.url,
        redis_url=url_of(redis_server),
        faq_dir=str(PROJECT_ROOT / "faq_data"),
        job_retry_intervals=(0,),
        loading_animation_after_ms=5000,
    )


@pytest.fixture(scope="session")
def nlu():
    return build_nlu(Settings())


@pytest.fixture
def app(settings, redis):
    return create_app(settings, redis=redis)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def worker(settings, redis, nlu, line_api):
    """Services with the dialogue installed; ``worker.run()`` drains the queue once."""
    services = build_worker_services(settings, redis=redis, nlu=nlu)
    services.run = lambda: SimpleWorker([services.queue], connection=redis).work(burst=True)
    return services


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
