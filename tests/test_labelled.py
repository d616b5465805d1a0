"""Residents' choices in the conversation log become a labelled question set the benchmark harness reads."""
import json
from urllib.parse import parse_qs

import yaml

from bot.labelled import CHOSEN, CONFIRMED, labelled_questions, paraphrase_yaml
from lab.datasets import load_demo
from tests.conftest import line_event
from tests.test_conversation import ask, quick_reply_actions, worker_with_thresholds


def turn(user, kind, decision, faq_id="", text="", lang="en"):
    return {"direction": "in", "platform": "line", "user": user, "kind": kind, "decision": decision,
            "faq_id": faq_id, "text": text, "lang": lang}


def select(user, faq_id):
    return turn(user, "postback", "answered", faq_id, json.dumps({"a": "select", "faq": faq_id, "lang": "en"}))


def feedback(user, faq_id, up):
    data = json.dumps({"a": "feedback", "faq": faq_id, "v": "up" if up else "down"})
    return turn(user, "postback", f"feedback-{'up' if up else 'down'}", faq_id, data)


def test_only_what_residents_said_labels_a_question(nlu):
    faq_question = nlu.faq.get("privacy-retention").text("en").question
    turns = [
        turn("a", "text", "clarified", "venue-register", "code for my shop?"),
        turn("b", "text", "answered", "privacy-retention", "how long is my email kept"),  # interleaved
        {"direction": "out", "platform": "line", "user": "a", "text": "Did you mean…"},
        select("a", "venue-register"),
        feedback("b", "privacy-retention", up=True),
        turn("a", "text", "answered", "alert-what-to-do", "I got a warning mail"),  # no feedback: unknown
        turn("b", "text", "answered", "venue-register", "my camera will not read it"),
        feedback("b", "venue-register", up=False),  # 👎 takes the answer back…
        select("b", "trouble-camera-cannot-read"),  # …and the choice it brings labels the question
        turn("c", "text", "answered", "privacy-retention", faq_question),  # the FAQ's own words: left out
        turn("c", "text", "clarified", "about-what", "what is this"),
        select("c", "no-such-entry"),  # an entry the FAQ no longer has
        turn("d", "text", "answered", "about-what", "what's this about"),
        feedback("d", "about-what", up=False),  # 👎 with nothing chosen after: no label
    ]
    rows = labelled_questions(turns, nlu.faq)
    assert [(r["text"], r["faq"], r["how"]) for r in rows] == [
        ("code for my shop?", "venue-register", CHOSEN),
        ("how long is my email kept", "privacy-retention", CONFIRMED),
        ("my camera will not read it", "trouble-camera-cannot-read", CHOSEN),
    ]
    exported = yaml.safe_load(paraphrase_yaml(rows, "this week"))
    assert exported["queries"][0] == {"faq": "venue-register", "lang": "en", "text": "code for my shop?"}


def test_the_console_exports_the_residents_choices_for_the_harness(operator, worker, line_api, nlu, monkeypatch,
                                                                    tmp_path):
    client = operator
    unsure = worker_with_thresholds(worker, monkeypatch, answer=2.0, clarify=0.0)  # every question clarified
    ask(client, unsure, line_event(text="How do I register my shop's QR code?", user="Upicker"))
    actions = quick_reply_actions(line_api.sent()[0].body["messages"][0])
    pick = next(a for a in actions if parse_qs(a["data"]).get("faq") == ["venue-register"])
    ask(client, unsure, line_event(kind="postback", user="Upicker", data=pick["data"]))

    sure = worker_with_thresholds(worker, monkeypatch, answer=0.0, clarify=0.0)  # every question answered
    line_api.reset()
    ask(client, sure, line_event(text="how long do you keep my email address", user="Uthumbs"))
    helpful = quick_reply_actions(line_api.sent()[0].body["messages"][0])[0]
    answered = parse_qs(helpful["data"])["faq"][0]
    ask(client, sure, line_event(kind="postback", user="Uthumbs", data=helpful["data"]))

    response = client.get("/console/labelled.yaml")
    assert response.status_code == 200 and "attachment" in response.headers["Content-Disposition"]
    path = tmp_path / "labelled.yaml"
    path.write_bytes(response.data)
    assert "1 picked from a list, 1 confirmed with a thumbs-up" in response.get_data(as_text=True)
    benchmark = load_demo(path)
    assert [(q.text, q.lang, q.qrels) for q in benchmark.queries] == [
        ("How do I register my shop's QR code?", "en", {"venue-register": 1}),
        ("how long do you keep my email address", "en", {answered: 1})]
    assert "Labelled questions (YAML)" in client.get("/console/dashboard").get_data(as_text=True)


def test_with_broken_faq_files_the_export_says_so_instead_of_guessing_the_entries(settings, redis, tmp_path):
    from bot.app import create_app
    from tests.conftest import sign_in

    (tmp_path / "broken.yaml").write_text("entries: [\n", encoding="utf-8")
    client = create_app(settings.replace(faq_dir=str(tmp_path)), redis=redis).test_client()
    assert sign_in(client).status_code == 302
    response = client.get("/console/labelled.yaml", follow_redirects=True)
    assert "The FAQ files are broken" in response.get_data(as_text=True)
