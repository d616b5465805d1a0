"""Whole path: signed webhook → Redis queue → worker (real NLU) → real LINE SDK → fake LINE API."""
import json
from urllib.parse import parse_qs

import pytest

from bot import jobs
from bot.convlog import ConversationLog, summary_key
from bot.loading import LoadingAnimations
from bot.platforms.line import retry_key
from bot.state import ConversationState, StateStore

from nlu import Nlu
from tests.conftest import ACCESS_TOKEN, line_event, post_events, same_policies


def ask(client, worker, *events):
    for event in events:
        assert post_events(client, event).status_code == 200
    worker.run()


def text_of(message) -> str:
    """What a resident reads in plain words: a text message's text, a Flex Message's alt text."""
    return message["altText"] if message["type"] == "flex" else message["text"]


def quick_reply_actions(message):
    return [item["action"] for item in message.get("quickReply", {}).get("items", [])]


def test_a_japanese_question_is_answered_in_japanese_by_reply(client, worker, line_api, nlu):
    entry = nlu.faq.get("venue-register")
    event = line_event(text=entry.text("ja").question)
    ask(client, worker, event)
    [sent] = line_api.sent()
    assert sent.path == "/v2/bot/message/reply"
    assert sent.headers["Authorization"] == f"Bearer {ACCESS_TOKEN}"
    assert sent.body["replyToken"] == event["replyToken"]
    [message] = sent.body["messages"]
    assert message["text"].startswith(entry.text("ja").answer)
    if entry.url:
        assert entry.url in message["text"]
    feedback = [parse_qs(action["data"]) for action in quick_reply_actions(message)]
    assert [f["v"] for f in feedback] == [["up"], ["down"]]
    assert all(f["faq"] == ["venue-register"] for f in feedback)


def test_an_english_question_gets_the_english_version_of_the_entry(client, worker, line_api, nlu):
    entry = nlu.faq.get("visitor-register")
    ask(client, worker, line_event(text=entry.text("en").question))
    [message] = line_api.sent()[0].body["messages"]
    assert message["text"].startswith(entry.text("en").answer)
    assert [a["label"] for a in quick_reply_actions(message)] == ["👍 Helpful", "👎 Not helpful"]


def test_a_stale_reply_token_falls_back_to_push_with_a_stable_retry_key(client, worker, line_api, nlu):
    event = line_event(text=nlu.faq.get("visitor-register").text("en").question, age_s=120)
    ask(client, worker, event)
    [sent] = line_api.sent()
    assert sent.path == "/v2/bot/message/push"
    assert sent.body["to"] == event["source"]["userId"]
    assert sent.headers["X-Line-Retry-Key"] == retry_key(event["webhookEventId"])
    assert retry_key(event["webhookEventId"]) == retry_key(event["webhookEventId"])


def test_a_job_retried_after_a_line_server_error_sends_the_same_reply_once(client, worker, line_api, nlu):
    line_api.fail_next(500)
    event = line_event(text=nlu.faq.get("visitor-register").text("en").question, age_s=120)
    ask(client, worker, event)
    attempts = [r for r in line_api.requests if r.path == "/v2/bot/message/push"]
    assert [r.status for r in attempts] == [500, 200]
    assert attempts[0].body == attempts[1].body
    assert attempts[0].headers["X-Line-Retry-Key"] == attempts[1].headers["X-Line-Retry-Key"]
    assert len(line_api.sent()) == 1


def test_a_job_that_fails_after_sending_does_not_send_again_when_retried(client, worker, line_api, nlu, monkeypatch):
    original = ConversationLog.append_reply
    calls = {"out": 0}

    def crash_once_after_sending(self, *args, **details):
        if not calls["out"]:
            calls["out"] += 1
            raise RuntimeError("worker died right after sending")
        return original(self, *args, **details)

    monkeypatch.setattr(ConversationLog, "append_reply", crash_once_after_sending)
    ask(client, worker, line_event(text=nlu.faq.get("visitor-register").text("ja").question))
    assert calls["out"] == 1  # the first attempt crashed, RQ ran the job again
    assert len(line_api.sent()) == 1


def test_running_a_finished_job_again_sends_nothing(client, worker, line_api, nlu):
    event = line_event(text=nlu.faq.get("visitor-register").text("ja").question)
    ask(client, worker, event)
    assert jobs.handle_event("line", event) == "already-sent"
    assert len(line_api.sent()) == 1


def test_a_permanent_send_failure_is_recorded_for_operators_and_not_retried(client, worker, line_api, nlu):
    line_api.fail_next(400)
    event = line_event(text=nlu.faq.get("visitor-register").text("ja").question)
    ask(client, worker, event)
    assert len([r for r in line_api.requests if "/message/" in r.path]) == 1
    out = [t for t in worker.convlog.conversation("line", event["source"]["userId"]) if t["direction"] == "out"]
    assert out[-1]["send_result"].startswith("undelivered: LINE API 400")
    summary = worker.redis.hgetall(summary_key("line", event["source"]["userId"]))
    assert b"handoff_since" in summary  # operators see the resident waiting for a person


def worker_with_thresholds(worker, monkeypatch, answer: float, clarify: float):
    """The worker with other policy thresholds (as NLU_*_THRESHOLD settings would give)."""
    monkeypatch.setattr(worker.dialogue.nlu, "policies", same_policies(answer, 0.0, clarify))
    return worker


@pytest.fixture
def unsure_worker(worker, monkeypatch):
    """No score reaches the answer threshold: every question is clarified."""
    return worker_with_thresholds(worker, monkeypatch, answer=2.0, clarify=0.0)


def test_clarify_offers_the_top_three_and_choosing_one_answers_it(client, unsure_worker, line_api, nlu):
    ask(client, unsure_worker, line_event(text="How do I register my shop's QR code?"))
    [message] = line_api.sent()[0].body["messages"]
    assert text_of(message).startswith("Did you mean")
    actions = quick_reply_actions(message)
    assert len(actions) == 4  # three entries and "none of these"
    assert all(len(a["label"]) <= 20 for a in actions)
    choices = [parse_qs(a["data"]) for a in actions[:3]]
    assert "venue-register" in [c["faq"][0] for c in choices]
    pick = next(a for a, c in zip(actions, choices) if c["faq"] == ["venue-register"])
    line_api.reset()
    ask(client, unsure_worker, line_event(kind="postback", data=pick["data"]))
    [answer] = line_api.sent()[0].body["messages"]
    assert answer["text"].startswith(nlu.faq.get("venue-register").text("en").answer)


@pytest.mark.parametrize("question, lang, lead", [("How do I register my shop's QR code?", "en", "Did you mean"),
                                                   ("店のQRコードの登録方法", "ja", "もしかして")])
def test_did_you_mean_shows_each_question_whole_as_a_tappable_row_on_line(client, unsure_worker, line_api, nlu,
                                                                         question, lang, lead):
    ask(client, unsure_worker, line_event(text=question, user="Urows"))
    [message] = line_api.sent()[0].body["messages"]
    assert message["type"] == "flex" and message["altText"].startswith(lead)  # what a notification shows
    lead_text, *rows = [part for part in message["contents"]["body"]["contents"] if part["type"] != "separator"]
    assert lead_text["text"].startswith(lead)
    offered = [parse_qs(row["action"]["data"]) for row in rows]
    questions = [nlu.faq.get(o["faq"][0]).text(lang).question for o in offered[:3]]
    assert [row["contents"][0]["text"] for row in rows[:3]] == [f"{n}. {q}" for n, q in enumerate(questions, 1)]
    assert [row["action"]["displayText"] for row in rows[:3]] == questions  # whole, not cut at 20 characters
    assert offered[3]["a"] == ["none"]
    assert [a["data"] for a in quick_reply_actions(message)] == [row["action"]["data"] for row in rows]
    line_api.reset()
    ask(client, unsure_worker, line_event(kind="postback", user="Urows", data=rows[0]["action"]["data"]))
    assert line_api.sent()[0].body["messages"][0]["text"].startswith(nlu.faq.get(offered[0]["faq"][0]).text(lang).answer)


def test_a_number_typed_back_to_a_did_you_mean_list_picks_that_choice(client, unsure_worker, line_api, nlu):
    ask(client, unsure_worker, line_event(text="How do I register my shop's QR code?", user="Utyper"))
    actions = quick_reply_actions(line_api.sent()[0].body["messages"][0])
    second = parse_qs(actions[1]["data"])["faq"][0]
    line_api.reset()
    ask(client, unsure_worker, line_event(text="２", user="Utyper"))  # full-width, as a Japanese keyboard types it
    [answer] = line_api.sent()[0].body["messages"]
    assert answer["text"].startswith(nlu.faq.get(second).text("en").answer)


@pytest.mark.parametrize("text", ["👍", "😀😀", "123", "？！", "..."])
def test_no_words_get_a_request_to_type_the_question_in_words(client, worker, line_api, text):
    ask(client, worker, line_event(text=text, user="Unowords"))
    [message] = line_api.sent()[0].body["messages"]
    assert "言葉で" in message["text"] and "in words" in message["text"]  # no language to go by: both
    assert "quickReply" not in message or not message["quickReply"]  # no unrelated entries offered
    assert worker.unanswered.items() == []


def tap(client, worker, line_api, action) -> dict:
    """The resident taps a quick-reply button; returns the one message the bot sent back."""
    line_api.reset()
    ask(client, worker, line_event(kind="postback", user="Utapper", data=action["data"]))
    [message] = line_api.sent()[0].body["messages"]
    return message


def test_a_thumbs_down_offers_the_entries_ranked_next_and_one_tap_answers(client, worker, line_api, nlu):
    ask(client, worker, line_event(text=nlu.faq.get("visitor-register").text("en").question, user="Utapper"))
    [message] = line_api.sent()[0].body["messages"]
    runners_up = worker.states.load("line", "Utapper").next_choices
    assert len(runners_up) == 2 and "visitor-register" not in runners_up
    offer = tap(client, worker, line_api, quick_reply_actions(message)[1])  # 👎
    assert text_of(offer).startswith("Thank you for telling us. Did you perhaps mean one of these?")
    actions = quick_reply_actions(offer)
    assert [parse_qs(a["data"])["faq"] for a in actions[:2]] == [[i] for i in runners_up] and len(actions) == 3
    answer = tap(client, worker, line_api, actions[0])
    assert answer["text"].startswith(nlu.faq.get(runners_up[0]).text("en").answer)
    [item] = worker.unanswered.items()  # operators still see which question went wrong
    assert item["text"] == nlu.faq.get("visitor-register").text("en").question and item["reason"] == "feedback-down"


def test_none_of_these_offers_the_next_three_once_then_counts_a_miss(client, unsure_worker, line_api, nlu):
    ask(client, unsure_worker, line_event(text="How do I register my shop's QR code?", user="Utapper"))
    first = quick_reply_actions(line_api.sent()[0].body["messages"][0])
    more = tap(client, unsure_worker, line_api, first[-1])  # "None of these"
    assert text_of(more).startswith("Then is it one of these?")
    second = quick_reply_actions(more)
    ranked = [c.faq_id for c in nlu.answer("How do I register my shop's QR code?").candidates]
    assert [parse_qs(a["data"])["faq"][0] for a in second[:-1]] == ranked[3:6]
    assert unsure_worker.states.load("line", "Utapper").misses == 0
    miss = tap(client, unsure_worker, line_api, second[-1])  # none of those either
    assert "call" in miss["text"] and not quick_reply_actions(miss)
    assert unsure_worker.states.load("line", "Utapper").misses == 1


def test_a_thumbs_down_after_a_choice_offers_the_other_choices_then_only_thanks(client, unsure_worker, line_api):
    ask(client, unsure_worker, line_event(text="How do I register my shop's QR code?", user="Utapper"))
    offered = quick_reply_actions(line_api.sent()[0].body["messages"][0])
    answer = tap(client, unsure_worker, line_api, offered[0])
    again = tap(client, unsure_worker, line_api, quick_reply_actions(answer)[1])  # 👎
    assert [a["data"] for a in quick_reply_actions(again)[:2]] == [a["data"] for a in offered[1:3]]
    answer = tap(client, unsure_worker, line_api, quick_reply_actions(again)[0])
    last = tap(client, unsure_worker, line_api, quick_reply_actions(answer)[1])  # 👎 again: the one left
    assert [a["data"] for a in quick_reply_actions(last)[:-1]] == [offered[2]["data"]]
    answer = tap(client, unsure_worker, line_api, quick_reply_actions(last)[0])
    thanks = tap(client, unsure_worker, line_api, quick_reply_actions(answer)[1])  # nothing left to offer
    assert thanks["text"].startswith("Thank you for telling us; we will use it") and not quick_reply_actions(thanks)


@pytest.fixture
def clueless_worker(worker, monkeypatch):
    """No score reaches any threshold: every question falls back."""
    return worker_with_thresholds(worker, monkeypatch, answer=2.0, clarify=2.0)


def test_two_misses_in_a_row_hand_the_resident_to_a_person(client, clueless_worker, line_api, redis):
    user = "Uneedshelp"
    ask(client, clueless_worker, line_event(text="ゴミの収集日はいつですか", user=user))
    first = line_api.sent()[0].body["messages"][0]["text"]  # far from every entry: where else to ask
    assert "03-0000-0000" in first and "QR追跡システム" in first and "0120-000-000" not in first
    assert "言い方を変えて" not in first
    assert not clueless_worker.states.load("line", user).handoff
    ask(client, clueless_worker, line_event(text="粗大ごみの出し方は？", user=user))
    second = line_api.sent()[1].body["messages"][0]["text"]
    assert "職員" in second
    state = clueless_worker.states.load("line", user)
    assert state.handoff and state.misses == 2
    decisions = [t["decision"] for t in clueless_worker.convlog.conversation("line", user) if t["direction"] == "in"]
    assert decisions == ["fallback", "handoff"]


@pytest.mark.parametrize("text, contact", [("How do I renew my passport?", "general information line"),
                                           ("パスポートの更新方法は？", "市の総合案内")])
def test_a_question_for_another_department_is_told_where_to_ask_not_to_rephrase(client, clueless_worker, line_api,
                                                                                text, contact):
    ask(client, clueless_worker, line_event(text=text, user="Uother"))
    reply = line_api.sent()[0].body["messages"][0]["text"]
    assert contact in reply and "https://city.example/contact" in reply
    assert "other words" not in reply and "言い方を変えて" not in reply


def test_a_question_nearer_another_departments_than_any_entry_gets_where_to_ask_beside_the_choices(
        tmp_path, client, worker, line_api, nlu, monkeypatch):
    outside = ("How do I renew my passport?", "When is the passport office open?")
    monkeypatch.setattr(worker.dialogue, "nlu", Nlu(worker.settings.faq_dir, same_policies(2.0, 0.0, 0.0),
                                                    nlu.embedder, outside=outside))
    ask(client, worker, line_event(text="Where do I renew my passport?", user="Upassport"))
    message = line_api.sent()[0].body["messages"][0]
    assert text_of(message).startswith("This account answers questions about the city's QR tracing system")
    assert "did you mean one of these?" in text_of(message) and len(quick_reply_actions(message)) == 4


def test_follow_greets_in_both_languages_with_three_example_questions(client, worker, line_api):
    ask(client, worker, line_event(kind="follow"))
    [message] = line_api.sent()[0].body["messages"]
    assert "友だち追加" in message["text"] and "Thank you for adding us" in message["text"]
    actions = quick_reply_actions(message)
    assert len(actions) == 3 and all(a["type"] == "message" for a in actions)


def test_unfollow_forgets_the_conversation_state(client, worker, line_api, nlu):
    user = "Uleaving"
    ask(client, worker, line_event(text=nlu.faq.get("visitor-register").text("ja").question, user=user))
    assert worker.redis.exists(worker.states.key("line", user))
    ask(client, worker, line_event(kind="unfollow", user=user))
    assert not worker.redis.exists(worker.states.key("line", user))


def test_a_sticker_gets_a_polite_text_only_reply(client, worker, line_api):
    ask(client, worker, line_event(kind="sticker"))
    [message] = line_api.sent()[0].body["messages"]
    assert "文字のメッセージ" in message["text"] and "text messages" in message["text"]


def test_feedback_is_thanked_and_logged(client, worker, line_api):
    user = "Ufeedback"
    ask(client, worker, line_event(kind="postback", user=user, data="a=feedback&faq=visitor-register&v=down&lang=en"))
    assert "Thank you for telling us" in line_api.sent()[0].body["messages"][0]["text"]
    [turn] = [t for t in worker.convlog.conversation("line", user) if t["direction"] == "in"]
    assert turn["decision"] == "feedback-down" and turn["faq_id"] == "visitor-register"


def test_the_loading_animation_goes_to_text_messages_waiting_long_enough_once_each(client, worker, line_api,
                                                                                   settings):
    worker.settings = settings.replace(loading_animation_after_ms=0)
    waiting = [line_event(text="QRコードとは？", user=f"Uwait{n}") for n in range(3)]
    post_events(client, *waiting, line_event(kind="sticker", user="Usticker"))
    animations = LoadingAnimations(worker)
    assert animations.round() == 3
    assert animations.round() == 0  # once a message
    assert LoadingAnimations(worker).round() == 0  # however many boxes look
    assert [r.body for r in line_api.requests] == [
        {"chatId": f"Uwait{n}", "loadingSeconds": 60} for n in range(3)]
    worker.run()
    assert [r.path for r in line_api.requests[3:]] == ["/v2/bot/message/reply"] * 4  # no animation before answers


def test_no_loading_animation_for_a_message_that_has_not_waited(client, worker, line_api):
    post_events(client, line_event(text="QRコードとは？", user="Uquick"))
    assert LoadingAnimations(worker).round() == 0  # LOADING_ANIMATION_AFTER_MS is 5 s in the tests
    worker.run()
    assert [r.path for r in line_api.requests] == ["/v2/bot/message/reply"]


def test_each_turn_is_logged_with_decision_score_and_latency_and_personal_data_redacted(client, worker, line_api):
    user = "Ulogged"
    ask(client, worker, line_event(text="QRコードが読めません。090-1234-5678 taro@example.com", user=user))
    turn_in, turn_out = worker.convlog.conversation("line", user)
    assert turn_in["direction"] == "in" and turn_out["direction"] == "out"
    assert "[phone]" in turn_in["text"] and "[email]" in turn_in["text"] and "090" not in turn_in["text"]
    assert turn_in["decision"] in ("answered", "clarified", "fallback")
    assert float(turn_in["score"]) > 0 and float(turn_in["nlu_ms"]) > 0
    assert turn_out["send_result"] == "reply" and int(turn_out["latency_ms"]) >= 0
    assert json.loads(turn_out["choices"])
    assert [t["user"] for t in worker.convlog.recent()] == [user, user]


def test_redaction_can_be_turned_off(client, settings, redis, nlu, line_api):
    from rq import SimpleWorker

    from bot.worker import build_worker_services

    services = build_worker_services(settings.replace(log_redact=False), redis=redis, nlu=nlu)
    post_events(client, line_event(text="call 090-1234-5678", user="Uplain"))
    SimpleWorker([services.queue], connection=redis).work(burst=True)
    assert "090-1234-5678" in services.convlog.conversation("line", "Uplain")[0]["text"]


def test_a_conversations_state_keeps_only_what_differs_from_a_new_one(redis):
    store = StateStore(redis, ttl_seconds=60)
    store.save("line", "Ustate", ConversationState(lang="ja", last_answer="qr-reissue", last_question="再発行"))
    assert json.loads(redis.get(StateStore.key("line", "Ustate"))) == {
        "lang": "ja", "last_answer": "qr-reissue", "last_question": "再発行"}
    assert store.load("line", "Ustate") == ConversationState(lang="ja", last_answer="qr-reissue",
                                                             last_question="再発行")


def test_taps_and_stickers_are_logged_in_words_an_operator_reads(client, worker, line_api, nlu):
    question = nlu.faq.get("visitor-register").text("en").question
    ask(client, worker, line_event(kind="postback", user="Uwords", data="a=select&faq=visitor-register&lang=en"),
        line_event(kind="postback", user="Uwords", data="a=feedback&faq=visitor-register&v=up&lang=en"),
        line_event(kind="postback", user="Uwords", data="a=none&lang=en"),
        line_event(kind="sticker", user="Uwords"))
    texts = [t["text"] for t in worker.convlog.conversation("line", "Uwords") if t["direction"] == "in"]
    assert texts == [f"Picked: {question}", f"👍 on {question}", "None of these", "[sticker]"]
    assert worker.redis.hget(summary_key("line", "Uwords"), "last_text") == b"[sticker]"
