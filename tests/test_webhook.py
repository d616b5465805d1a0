"""The webhook refuses what it must, answers LINE at once, and queues each event once."""

import pytest

from bot.app import create_app
from tests.conftest import post_events, line_event


def queued(app):
    return app.extensions["bot"].queue.count


def test_it_queues_a_signed_text_message(app, client):
    response = post_events(client, line_event(text="QRコードとは？"))
    assert response.status_code == 200
    assert response.get_json() == {"queued": 1}
    assert queued(app) == 1


@pytest.mark.parametrize("signature", ["", "bm90IGEgc2lnbmF0dXJl", "forged=="])
def test_it_rejects_a_missing_or_forged_signature(app, client, signature):
    response = post_events(client, line_event(text="hello"), signature=signature)
    assert response.status_code == 401
    assert "signature" in response.get_json()["error"]
    assert queued(app) == 0


def test_it_rejects_a_body_signed_with_another_secret(app, client):
    response = post_events(client, line_event(text="hello"), secret="someone-else")
    assert response.status_code == 401
    assert queued(app) == 0


@pytest.mark.parametrize("body,reason", [("{not json", "not valid JSON"), ('{"events": "x"}', "no list of events"),
                                         ("[1, 2]", "no list of events")])
def test_it_rejects_malformed_bodies_with_400(app, client, body, reason):
    from bot.local_chat import sign
    from tests.conftest import CHANNEL_SECRET

    response = client.post("/callback", data=body, headers={"X-Line-Signature": sign(body, CHANNEL_SECRET)})
    assert response.status_code == 400
    assert reason in response.get_json()["error"]
    assert queued(app) == 0


def test_it_rejects_a_body_over_one_mebibyte_with_413(app, client):
    big = line_event(text="x" * (1024 * 1024))
    response = post_events(client, big)
    assert response.status_code == 413
    assert queued(app) == 0


def test_the_line_console_verify_request_gets_200(app, client):
    dummies = [line_event(text="verify"), line_event(text="verify")]
    dummies[0]["replyToken"], dummies[1]["replyToken"] = "0" * 32, "f" * 32
    assert post_events(client, *dummies).status_code == 200
    assert post_events(client).status_code == 200  # the newer form: no events at all
    assert queued(app) == 0


@pytest.mark.parametrize("event_type", ["join", "beacon", "somethingNew"])
def test_an_event_type_we_do_not_handle_gets_200_and_is_not_queued(app, client, event_type):
    event = line_event(text="x")
    event["type"] = event_type
    response = post_events(client, event)
    assert response.status_code == 200
    assert queued(app) == 0


def test_a_redelivered_event_is_queued_only_once(app, client):
    event = line_event(text="QRコードとは？")
    assert post_events(client, event).get_json() == {"queued": 1}
    redelivered = {**event, "deliveryContext": {"isRedelivery": True}}
    assert post_events(client, redelivered).get_json() == {"queued": 0}
    assert queued(app) == 1


def test_it_answers_503_when_redis_is_down_so_line_retries(settings, redis):
    down = settings.replace(redis_url="redis://127.0.0.1:1/0")
    client = create_app(down).test_client()
    response = post_events(client, line_event(text="QRコードとは？"))
    assert response.status_code == 503
    assert "retry" in response.get_json()["error"]


def test_a_failed_enqueue_leaves_no_mark_so_the_retry_is_accepted(app, client, monkeypatch):
    import redis as redis_lib

    services = app.extensions["bot"]
    event = line_event(text="QRコードとは？")

    def broken_enqueue(*args, **kwargs):
        raise redis_lib.ConnectionError("gone")

    monkeypatch.setattr(services.queue, "enqueue", broken_enqueue)
    assert post_events(client, event).status_code == 503
    monkeypatch.undo()
    assert post_events(client, event).get_json() == {"queued": 1}


def test_the_webhook_never_logs_message_text(client, caplog):
    caplog.set_level("DEBUG")
    post_events(client, line_event(text="私の電話番号は090-1234-5678です"))
    assert "090-1234-5678" not in caplog.text
    assert "電話番号" not in caplog.text
