"""Every accepted message is answered exactly once, or given up where operators see it, never silently."""
import json

import requests

from bot.convlog import summary_key
from bot.platforms.line import retry_key
from tests.conftest import post_events, line_event, slack_message, slack_post

QUESTION = "QRコードの登録はどうすれば良いですか？"


def _out(worker, platform, user):
    return [t for t in worker.convlog.conversation(platform, user) if t["direction"] == "out"]


def _waiting(worker, platform, user) -> bool:
    """As the console and the bot see it: both say the resident waits for a person."""
    console = b"handoff_since" in worker.redis.hgetall(summary_key(platform, user))
    assert console == worker.states.load(platform, user).handoff
    return console


def test_with_four_in_ten_line_calls_failing_each_message_is_answered_once_or_visibly_given_up(client, worker,
                                                                                              line_api):
    line_api.fail_randomly(0.4, "/v2/bot/message/", seed=7)
    events = {f"Uflaky{n}": line_event(text=QUESTION, user=f"Uflaky{n}") for n in range(40)}
    for event in events.values():
        assert post_events(client, event).status_code == 200
    worker.run()
    users = list(events)
    by_token = {event["replyToken"]: user for user, event in events.items()}
    answered = [by_token.get(r.body.get("replyToken")) or r.body.get("to") for r in line_api.sent()]
    assert len(answered) == len(set(answered))  # nobody answered twice
    for user in users:
        results = [t["send_result"] for t in _out(worker, "line", user)]
        assert results[-1] in ("reply", "push") or (results[-1].startswith("undelivered") and
                                                   _waiting(worker, "line", user))
    assert len(answered) + sum(_out(worker, "line", u)[-1]["send_result"].startswith("undelivered")
                                      for u in users) == len(users)
    assert any(r.status == 503 for r in line_api.requests)  # the failures did happen


def test_an_event_redelivered_after_its_answer_went_out_is_not_answered_or_logged_again(client, worker,
                                                                                        line_api):
    event = line_event(text=QUESTION, user="Ulate")
    post_events(client, event)
    worker.run()
    assert post_events(client, line_event(text=QUESTION, user="Ulate", event_id=event["webhookEventId"],
                                          redelivery=True)).get_json() == {"queued": 1}  # its job is gone
    worker.run()
    assert len(line_api.sent()) == 1
    assert [t["direction"] for t in worker.convlog.conversation("line", "Ulate")] == ["in", "out"]


def _interrupted(worker, event, method):
    """What a worker that died during its send leaves behind: the mark that it began, no mark that it finished."""
    worker.redis.set(f"event:sending:line:{event['webhookEventId']}", method)


def test_a_reply_interrupted_after_line_took_it_is_not_sent_again(client, worker, line_api):
    event = line_event(text=QUESTION, user="Uinterrupted")
    post_events(client, event)
    _interrupted(worker, event, "reply")
    landed = requests.post(f"{line_api.url}/v2/bot/message/reply", timeout=5,  # the dead worker's request
                           json={"replyToken": event["replyToken"], "messages": [{"type": "text", "text": "x"}]})
    assert landed.status_code == 200
    worker.run()
    assert len(line_api.sent()) == 1  # LINE refused the used token: the resident has the answer once
    assert _out(worker, "line", "Uinterrupted")[-1]["send_result"] == "delivered-earlier"


def test_a_reply_interrupted_before_line_took_it_is_sent_by_the_next_run(client, worker, line_api):
    event = line_event(text=QUESTION, user="Uretried")
    post_events(client, event)
    _interrupted(worker, event, "reply")
    worker.run()
    [sent] = line_api.sent()
    assert sent.body["replyToken"] == event["replyToken"]


def test_an_interrupted_reply_whose_token_went_stale_is_not_pushed_but_shown_to_operators(client, worker,
                                                                                         line_api):
    event = line_event(text=QUESTION, user="Ustale", age_s=120)
    post_events(client, event)
    _interrupted(worker, event, "reply")
    worker.run()
    assert line_api.sent() == []  # a push could be a second answer
    assert _out(worker, "line", "Ustale")[-1]["send_result"].startswith("unconfirmed")
    assert _waiting(worker, "line", "Ustale")


def test_an_interrupted_push_is_pushed_again_with_the_same_retry_key(client, worker, line_api):
    event = line_event(text=QUESTION, user="Upushed", age_s=120)
    post_events(client, event)
    _interrupted(worker, event, "push")
    requests.post(f"{line_api.url}/v2/bot/message/push", timeout=5,
                  headers={"X-Line-Retry-Key": retry_key(event["webhookEventId"])},
                  json={"to": "Upushed", "messages": [{"type": "text", "text": "x"}]})
    worker.run()
    assert len(line_api.sent()) == 1 and line_api.requests[-1].status == 409
    assert _out(worker, "line", "Upushed")[-1]["send_result"] == "delivered-earlier"


def test_an_interrupted_slack_post_is_not_posted_again(client, worker, slack_api):
    envelope = slack_message("what is the QR code for?", user="USTOP")
    slack_post(client, json.dumps(envelope))
    worker.redis.set(f"event:sending:slack:{envelope['event_id']}", "post")
    worker.run()
    assert slack_api.sent() == []
    assert _out(worker, "slack", "USTOP")[-1]["send_result"].startswith("unconfirmed")
