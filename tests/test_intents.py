"""Conversational intents: kept as data a city edits, refused precisely when broken, and in the conversation
a person at once when asked for, a reply to small talk, and never a real FAQ question taken."""
import textwrap

import pytest

from bot.convlog import summary_key
from config.settings import PROJECT_ROOT
from nlu import FaqError, load_intents
from tests.conftest import line_event, post_events

SHIPPED = PROJECT_ROOT / "faq_data" / "intents"
GOOD = """\
intents:
  - id: person
    action: handoff
    ja: {phrasings: [人と話したい, 職員につないで, 担当者をお願いします], reply: "おつなぎします。{phone}"}
    en: {phrasings: [a person please, talk to staff, human], reply: "Passing you to staff. {phone}"}
"""


def write(tmp_path, text):
    (tmp_path / "intents.yaml").write_text(textwrap.dedent(text), encoding="utf-8")
    return tmp_path


def test_the_shipped_intents_load_with_many_phrasings_in_both_languages():
    intents = {intent.id: intent for intent in load_intents(SHIPPED)}
    assert set(intents) == {"person", "greeting", "thanks", "goodbye"}
    assert intents["person"].action == "handoff"
    assert all(len(i.phrasings[lang]) >= 10 for i in intents.values() for lang in ("ja", "en"))


def test_no_folder_means_no_intents(tmp_path):
    assert load_intents(tmp_path / "absent") == ()


@pytest.mark.parametrize("broken, where", [
    (GOOD.replace("action: handoff", "action: dance"), "entry person: field action"),
    (GOOD.replace("[a person please, talk to staff, human]", "[a person please]"), "field en.phrasings"),
    (GOOD.replace("{phone}\"}\n", "{office}\"}\n", 1).replace('"おつなぎします。{phone}"', '"おつなぎします。{office}"'),
     "field ja.reply: unknown placeholder {office}"),
    (GOOD.replace("    en:", "    fr:"), "entry person: field fr: unknown field"),
    (GOOD + GOOD.replace("intents:\n", ""), "entry person: field id: duplicate id"),
])
def test_a_broken_intents_file_is_refused_naming_file_intent_and_field(tmp_path, broken, where):
    with pytest.raises(FaqError) as error:
        load_intents(write(tmp_path, broken))
    assert str(error.value).startswith("intents.yaml: ") and where in str(error.value)


def ask(client, worker, line_api, text, user):
    before = len(line_api.sent())
    assert post_events(client, line_event(text=text, user=user)).status_code == 200
    worker.run()
    [sent] = line_api.sent()[before:]
    return sent.body["messages"][0]["text"]


@pytest.mark.parametrize("text", ["I want to talk to a person", "人と話したいです"])
def test_asking_for_a_person_hands_over_at_once_with_the_office_hours(client, worker, line_api, text):
    reply = ask(client, worker, line_api, text, "Uperson")
    assert worker.settings.fallback_phone in reply and ("9:00" in reply or "9時" in reply)
    assert worker.states.load("line", "Uperson").handoff
    assert worker.redis.hget(summary_key("line", "Uperson"), "handoff_since")  # in the console's Waiting list


@pytest.mark.parametrize("text, expected", [
    ("hello", "Hello!"), ("こんにちは", "こんにちは。"), ("thank you", "You're welcome"),
    ("ありがとうございます", "どういたしまして"), ("goodbye", "Thank you for using this service"), ("さようなら", "ご利用ありがとうございました"),
])
def test_small_talk_gets_its_own_reply_in_the_residents_language(client, worker, line_api, text, expected):
    reply = ask(client, worker, line_api, text, "Usmalltalk")
    assert reply.startswith(expected)
    assert not worker.states.load("line", "Usmalltalk").handoff


@pytest.mark.parametrize("text", ["thank you for the QR poster, how do I print another?",
                                  "こんにちは、QRコードの登録方法を教えてください"])
def test_a_question_wrapped_in_small_talk_goes_to_the_faq(client, worker, line_api, nlu, text):
    ask(client, worker, line_api, text, "Unearmiss")
    [turn] = [t for t in worker.convlog.conversation("line", "Unearmiss") if t["direction"] == "in"]
    assert turn["decision"] in ("answered", "clarified")


def test_a_did_you_mean_list_stays_open_through_thanks(client, worker, line_api, nlu):
    worker.states.save("line", "Upending", worker.states.load("line", "Upending").__class__(
        lang="en", pending=["visitor-register", "venue-register"]))
    ask(client, worker, line_api, "thanks", "Upending")
    assert worker.states.load("line", "Upending").pending == ["visitor-register", "venue-register"]


def test_the_intents_reload_with_the_faq_and_a_broken_file_keeps_the_last_good_ones(tmp_path, nlu):
    import shutil

    from nlu import Nlu
    from tests.conftest import same_policies

    faq_dir, intents_dir = tmp_path / "faq", tmp_path / "faq" / "intents"
    intents_dir.mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "faq_data" / "costs.yaml", faq_dir)
    (intents_dir / "intents.yaml").write_text(GOOD, encoding="utf-8")
    policies = {lang: p.__class__(**{**vars(p), "intent_threshold": 0.9}) for lang, p in same_policies(2, 0, 0).items()}
    small = Nlu(faq_dir, policies, nlu.embedder, intents_dir=intents_dir)
    assert [i.id for i in small.intents] == ["person"] and small.answer("talk to staff", "en").intent == "person"

    greeting = GOOD.replace("id: person", "id: greeting").replace("action: handoff", "action: reply")
    (intents_dir / "intents.yaml").write_text(greeting, encoding="utf-8")
    assert small.reload_if_changed() and [i.id for i in small.intents] == ["greeting"]
    assert small.answer("talk to staff", "en").intent == "greeting"

    (intents_dir / "intents.yaml").write_text(GOOD.replace("action: handoff", "action: dance"), encoding="utf-8")
    assert not small.reload_if_changed()
    assert [i.id for i in small.intents] == ["greeting"]  # the last good ones stay in service
    assert small.status()["faq_error"].startswith("intents.yaml: entry person: field action")
