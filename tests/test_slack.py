"""Slack: the same bot through the Events API, signed with the real verifier, sent with the real WebClient."""
import json
import time
from urllib.parse import parse_qs, urlencode

import pytest
from rq import SimpleWorker

from bot.app import create_app
from bot.worker import build_worker_services

from tests.conftest import BOT_USER, line_event, post_events, same_policies, slack_click, slack_message, slack_post


def ask(client, worker, payload, path="/slack/events", **kwargs):
    body = json.dumps(payload) if path == "/slack/events" else urlencode({"payload": json.dumps(payload)})
    response = slack_post(client, body, path=path, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)
    worker.run()
    return response


def buttons(sent):
    return [e for block in sent.body["blocks"] if block["type"] == "actions" for e in block["elements"]]


@pytest.mark.parametrize("kwargs", [{"secret": "wrong-secret"}, {"timestamp": int(time.time()) - 600},
                                    {"timestamp": "yesterday"}])
def test_a_bad_or_stale_signature_is_refused(app, client, kwargs):
    response = slack_post(client, json.dumps(slack_message("hello")), **kwargs)
    assert response.status_code == 401
    assert app.extensions["bot"].queue.count == 0


def test_a_request_without_signature_headers_is_refused(client):
    response = client.post("/slack/events", data=json.dumps(slack_message("hello")))
    assert response.status_code == 401


def test_url_verification_is_answered_with_the_challenge(client):
    payload = {"type": "url_verification", "token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}
    response = slack_post(client, json.dumps(payload))
    assert response.get_json() == {"challenge": payload["challenge"]}


def test_ssl_check_gets_200(client):
    assert slack_post(client, "ssl_check=1&token=abc").status_code == 200


def test_a_direct_message_is_answered_in_the_dm(client, worker, slack_api, nlu):
    entry = nlu.faq.get("visitor-register")
    ask(client, worker, slack_message(entry.text("en").question))
    [sent] = slack_api.sent()
    assert sent.headers["Authorization"] == "Bearer xoxb-test"
    assert sent.body["channel"] == "D0001" and sent.body.get("thread_ts") is None
    assert sent.body["text"].startswith(entry.text("en").answer)
    values = [parse_qs(b["value"]) for b in buttons(sent)]
    assert [v["v"] for v in values] == [["up"], ["down"]]


def test_a_channel_mention_is_answered_in_its_thread_without_the_mention(client, worker, slack_api, nlu):
    entry = nlu.faq.get("venue-register")
    payload = slack_message(f"<@{BOT_USER}> {entry.text('ja').question}", channel="C0001",
                            channel_type="channel", event_type="app_mention")
    ask(client, worker, payload)
    [sent] = slack_api.sent()
    assert sent.body["channel"] == "C0001" and sent.body["thread_ts"] == payload["event"]["ts"]
    assert sent.body["text"].startswith(entry.text("ja").answer)


def test_slack_and_line_get_the_same_answer_through_the_same_core(client, worker, slack_api, line_api):
    question = "感染者が出たってメールが届いた。どうしたらいい？"
    ask(client, worker, slack_message(question))
    post_events(client, line_event(text=question))
    worker.run()
    assert slack_api.sent()[0].body["text"] == line_api.sent()[0].body["messages"][0]["text"]


def test_slack_retries_of_one_event_get_one_answer(app, client, worker, slack_api, nlu):
    payload = slack_message(nlu.faq.get("visitor-register").text("en").question)
    assert slack_post(client, json.dumps(payload)).get_json() == {"queued": 1}
    queued_again = slack_post(client, json.dumps(payload), headers={"X-Slack-Retry-Num": "1"})
    assert queued_again.get_json() == {"queued": 0}  # its job is still waiting
    worker.run()
    ask(client, worker, payload, headers={"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_timeout"})
    assert len(slack_api.sent()) == 1  # a retry after the answer went out runs and finds it sent


@pytest.mark.parametrize("extra", [{"bot_id": "B1"}, {"user": BOT_USER}, {"subtype": "message_changed"},
                                   {"subtype": "message_deleted"}, {"channel_type": "channel"}])
def test_own_and_bot_messages_edits_and_plain_channel_messages_are_ignored(app, client, extra):
    payload = slack_message("QRコードが読めない")
    payload["event"].update(extra)
    response = slack_post(client, json.dumps(payload))
    assert response.status_code == 200 and response.get_json() == {"queued": 0}
    assert app.extensions["bot"].queue.count == 0


def test_did_you_mean_buttons_answer_when_clicked_and_mark_the_message(client, worker, slack_api, monkeypatch, nlu):
    monkeypatch.setattr(worker.dialogue.nlu, "policies", same_policies(2.0, 0.0, 0.0))
    payload = slack_message(f"<@{BOT_USER}> How do I register my shop's QR code?", channel="C0001",
                            channel_type="channel", event_type="app_mention")
    ask(client, worker, payload)
    [question] = slack_api.sent()
    assert question.body["text"].startswith("Did you mean one of these? Tap a number.")
    labels = [b["text"]["text"] for b in buttons(question)]
    assert [label.split(".")[0] for label in labels[:3]] == ["1", "2", "3"]  # the numbers the text asks for
    choice = next(b for b in buttons(question) if parse_qs(b["value"]).get("faq") == ["venue-register"])
    slack_api.reset()
    click = slack_click(choice["value"], label=choice["text"]["text"], channel="C0001",
                        message_ts="1700000001.000200", thread_ts=payload["event"]["ts"])
    ask(client, worker, click, path="/slack/interactions")
    [update] = slack_api.sent("chat.update")
    assert update.body["ts"] == "1700000001.000200" and "actions" not in json.dumps(update.body["blocks"])
    [answer] = slack_api.sent()
    assert answer.body["thread_ts"] == payload["event"]["ts"]
    assert answer.body["text"].startswith(nlu.faq.get("venue-register").text("en").answer)


def test_a_thumbs_down_click_offers_the_entries_ranked_next_as_buttons(client, worker, slack_api, nlu):
    ask(client, worker, slack_message(nlu.faq.get("visitor-register").text("en").question))
    down = buttons(slack_api.sent()[0])[1]
    slack_api.reset()
    ask(client, worker, slack_click(down["value"], label=down["text"]["text"]), path="/slack/interactions")
    [offer] = slack_api.sent()
    assert offer.body["text"].startswith("Thank you for telling us. Did you perhaps mean one of these?")
    choices = [parse_qs(b["value"]) for b in buttons(offer)]
    assert [c["a"] for c in choices] == [["select"], ["select"], ["none"]]
    assert ["visitor-register"] not in [c.get("faq") for c in choices]


def test_a_rate_limited_post_is_retried_after_the_retry_after_delay(client, worker, slack_api, nlu):
    slack_api.fail_next(429, path="chat.postMessage", body={"ok": False, "error": "ratelimited"})
    started = time.monotonic()
    ask(client, worker, slack_message(nlu.faq.get("visitor-register").text("en").question))
    attempts = [r.status for r in slack_api.requests if r.path.endswith("chat.postMessage")]
    assert attempts == [429, 200]
    assert time.monotonic() - started >= 1.0  # the fake says Retry-After: 1


def test_an_invalid_token_is_a_permanent_failure_recorded_for_operators(client, settings, redis, nlu, slack_api):
    services = build_worker_services(settings.replace(slack_bot_token="xoxb-revoked"), redis=redis, nlu=nlu)
    slack_post(client, json.dumps(slack_message("QRコードが読めない", user="UREVOKED")))
    SimpleWorker([services.queue], connection=redis).work(burst=True)
    assert len([r for r in slack_api.requests if r.path.endswith("chat.postMessage")]) == 1  # not retried
    out = [t for t in services.convlog.conversation("slack", "UREVOKED") if t["direction"] == "out"]
    assert out[-1]["send_result"] == "undelivered: Slack API 200 invalid_auth"


def test_slack_routes_are_off_until_configured(settings, redis):
    client = create_app(settings.replace(slack_signing_secret="", slack_bot_token=""), redis=redis).test_client()
    assert slack_post(client, json.dumps(slack_message("hi"))).status_code == 404
    assert slack_post(client, "payload=%7B%7D", path="/slack/interactions").status_code == 404


def test_a_file_sent_by_dm_gets_the_text_only_reply(client, worker, slack_api):
    ask(client, worker, slack_message("", subtype="file_share", files=[{"id": "F1", "name": "photo.jpg"}]))
    [sent] = slack_api.sent()
    assert "text messages" in sent.body["text"]
