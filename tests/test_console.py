"""The operator console: sign-in, CSRF, live list, take over → bot silent → operator reply → hand back."""
import pytest

from bot.app import create_app
from bot.console.conversations import anonymous_id
from bot.platforms.line import retry_key
from tests.conftest import OPERATOR_PASSWORD, form, line_event, post_events, same_policies, sign_in

@pytest.mark.parametrize("path", ["/console/", "/console/conversations", "/console/waiting",
                                  "/console/changes?after=0", "/console/c/line/U1"])
def test_every_console_page_needs_a_signed_in_operator(client, path):
    response = client.get(path)
    assert response.status_code == 302 and "/console/login" in response.location


def test_a_wrong_name_or_password_gets_the_same_answer(client):
    wrong_password = sign_in(client, password="nope")
    wrong_name = sign_in(client, name="nobody")
    assert wrong_password.status_code == wrong_name.status_code == 401
    for response in (wrong_password, wrong_name):
        assert "Wrong name or password." in response.get_data(as_text=True)


def test_sign_in_is_rate_limited_after_five_failures(client):
    for _ in range(5):
        assert sign_in(client, password="nope").status_code == 401
    response = sign_in(client)  # even the right password waits out the lockout
    assert response.status_code == 429 and "Too many failed sign-ins" in response.get_data(as_text=True)


def test_the_session_cookie_is_http_only_and_same_site(client):
    response = sign_in(client)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_signing_out_ends_the_session_on_the_server_too(operator, app):
    kept = operator.get_cookie("session").value  # what a stolen or copied cookie would carry
    assert operator.get("/console/conversations").status_code == 200
    operator.post("/console/logout", data=form(operator))
    replayed = app.test_client()
    replayed.set_cookie("session", kept)
    response = replayed.get("/console/conversations")
    assert response.status_code == 302 and "/console/login" in response.location


def test_an_operator_removed_from_the_settings_is_signed_out(operator, settings, redis):
    kept = operator.get_cookie("session").value
    without_sato = create_app(settings.replace(console_operators=settings.console_operators.split(",")[1]),
                              redis=redis).test_client()
    without_sato.set_cookie("session", kept)
    assert without_sato.get("/console/conversations").status_code == 302


@pytest.mark.parametrize("path", ["/console/login", "/console/logout", "/console/c/line/U1/takeover"])
def test_a_post_without_the_csrf_token_is_refused(operator, path):
    assert operator.post(path, data={"name": "sato", "password": OPERATOR_PASSWORD}).status_code == 400


def test_sign_out_ends_the_session(operator):
    operator.post("/console/logout", data=form(operator))
    assert operator.get("/console/conversations").status_code == 302


def test_the_console_is_off_without_operators(settings, redis):
    client = create_app(settings.replace(console_operators="", secret_key=""), redis=redis).test_client()
    assert client.get("/console/login").status_code == 404


def test_a_conversation_appears_in_the_list_and_its_transcript_shows_faq_score_and_latency(operator, worker, nlu):
    entry = nlu.faq.get("visitor-register")
    post_events(operator, line_event(text=entry.text("ja").question, user="Uwatched"))
    worker.run()
    page = operator.get("/console/conversations").get_data(as_text=True)
    assert entry.text("ja").question in page and "answered" in page
    assert f">{anonymous_id('line', 'Uwatched')}</a>" in page  # the list shows a pseudonym
    transcript = operator.get("/console/c/line/Uwatched").get_data(as_text=True)
    assert "visitor-register" in transcript and "score" in transcript and "NLU" in transcript


def test_the_list_filters_by_language_and_text(operator, worker, nlu):
    post_events(operator, line_event(text=nlu.faq.get("visitor-register").text("ja").question, user="Uja"))
    post_events(operator, line_event(text=nlu.faq.get("visitor-register").text("en").question, user="Uen"))
    worker.run()
    japanese = operator.get("/console/conversations?lang=ja&partial=1").get_data(as_text=True)
    assert "Uja" in japanese and "Uen" not in japanese
    found = operator.get("/console/conversations?q=scanning&partial=1").get_data(as_text=True)
    assert "Uen" in found and "Uja" not in found


def test_take_over_silences_the_bot_sends_operator_replies_and_hand_back_restores_it(operator, worker, line_api, nlu):
    user, question = "Uhelpme", nlu.faq.get("visitor-register").text("ja").question
    operator.post(f"/console/c/line/{user}/takeover", data=form(operator))

    post_events(operator, line_event(text=question, user=user))
    worker.run()
    assert line_api.sent() == []  # the bot stayed silent
    assert worker.convlog.conversation("line", user)[-1]["decision"] == "human"

    operator.post(f"/console/c/line/{user}/send", data=form(operator, text="担当の佐藤です。ご用件を伺います。"))
    worker.run()
    [push] = line_api.sent("/push")
    assert push.body["to"] == user and push.body["messages"][0]["text"] == "担当の佐藤です。ご用件を伺います。"
    assert push.headers["X-Line-Retry-Key"]
    last = worker.convlog.conversation("line", user)[-1]
    assert (last["direction"], last["operator"], last["send_result"]) == ("out", "sato", "push")

    operator.post(f"/console/c/line/{user}/handback", data=form(operator))
    post_events(operator, line_event(text=question, user=user))
    worker.run()
    assert line_api.sent("/reply")[-1].body["messages"][0]["text"].startswith(nlu.faq.get("visitor-register").text("ja").answer)


def test_only_the_operator_in_charge_can_send(operator, worker, line_api, settings, redis):
    operator.post("/console/c/line/Ushared/takeover", data=form(operator))
    other = create_app(settings, redis=redis).test_client()
    sign_in(other, name="suzuki")
    other.post("/console/c/line/Ushared/send", data=form(other, text="hello"))
    worker.run()
    assert line_api.sent() == []


def test_a_resident_handed_off_appears_in_the_waiting_queue_until_taken_over(operator, worker, monkeypatch):
    monkeypatch.setattr(worker.dialogue.nlu, "policies", same_policies(2.0, 0.0, 2.0))
    for text in ("粗大ごみの日は？", "図書館の場所は？"):
        post_events(operator, line_event(text=text, user="Uwaiting"))
        worker.run()
    waiting = operator.get("/console/waiting").get_data(as_text=True)
    assert "図書館の場所は？" in waiting and " min" in waiting
    operator.post("/console/c/line/Uwaiting/takeover", data=form(operator))
    assert "図書館の場所は？" not in operator.get("/console/waiting").get_data(as_text=True)


def test_operator_messages_reach_slack_in_the_residents_thread(operator, worker, slack_api):
    import json

    from tests.conftest import slack_message, slack_post

    payload = slack_message("<@UBOTSELF> QRコードが読めない", channel="C9", channel_type="channel",
                            event_type="app_mention")
    operator.post("/console/c/slack/USLACK1/takeover", data=form(operator))
    slack_post(operator, json.dumps(payload))
    worker.run()
    operator.post("/console/c/slack/USLACK1/send", data=form(operator, text="Staff here, how can I help?"))
    worker.run()
    [sent] = slack_api.sent()
    assert sent.body["channel"] == "C9" and sent.body["thread_ts"] == payload["event"]["ts"]
    assert sent.body["text"] == "Staff here, how can I help?"


def test_the_retry_key_of_an_operator_message_is_stable(worker, line_api):
    from bot import jobs

    worker.handover.take_over("line", "Uretry", "sato")
    assert jobs.send_operator_message("line", "Uretry", "hi", "sato", "m1") == "push"
    assert jobs.send_operator_message("line", "Uretry", "hi", "sato", "m1") == "already-sent"
    assert line_api.sent()[0].headers["X-Line-Retry-Key"] == retry_key("m1")
