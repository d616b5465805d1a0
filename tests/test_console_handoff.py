"""One handoff state, shown alike everywhere: waiting (the bot handed the resident to staff) → taken over (an
operator answers) → handed back or resolved (the bot answers again)."""
from tests.conftest import form, line_event, post_events


def ask(operator, worker, line_api, text, user="Uhandoff"):
    before = len(line_api.sent())
    post_events(operator, line_event(text=text, user=user))
    worker.run()
    sent = line_api.sent()[before:]
    return sent[0].body["messages"][0] if sent else None


def views(operator, user="Uhandoff"):
    """What the list, the Waiting page and the transcript say about the conversation."""
    listed = operator.get("/console/conversations").get_data(as_text=True)
    waiting = operator.get("/console/waiting").get_data(as_text=True)
    transcript = operator.get(f"/console/c/line/{user}").get_data(as_text=True)
    return listed, waiting, transcript


def test_waiting_taken_over_and_handed_back_read_the_same_in_every_view(operator, worker, line_api, nlu):
    ask(operator, worker, line_api, "I want to talk to a person")
    listed, waiting, transcript = views(operator)
    assert all("waiting for staff" in page for page in (listed, waiting, transcript))
    assert "Resolve" in waiting and "Resolve" in transcript

    # While waiting the bot answers what it is sure of, and says staff will reply to the rest
    unsure = ask(operator, worker, line_api, "Something about my neighbour's cat")
    assert unsure["text"].startswith("A member of staff will reply in this chat")
    sure = ask(operator, worker, line_api, nlu.faq.get("visitor-register").text("en").question)
    assert sure["text"].startswith(nlu.faq.get("visitor-register").text("en").answer)

    operator.post("/console/c/line/Uhandoff/takeover", data=form(operator))
    listed, waiting, transcript = views(operator)
    assert "taken over by sato" in listed and "taken over by sato" in transcript
    assert "Uhandoff" not in waiting and "Nobody is waiting" in waiting
    assert ask(operator, worker, line_api, "こんにちは、まだですか") is None  # staff answer; the bot is silent
    assert "· ja" in operator.get("/console/c/line/Uhandoff").get_data(as_text=True)  # the header keeps the language

    operator.post("/console/c/line/Uhandoff/handback", data=form(operator))
    listed, waiting, transcript = views(operator)
    assert not any("waiting for staff" in page or "taken over by" in page for page in (listed, waiting, transcript))
    assert not worker.states.load("line", "Uhandoff").handoff


def test_resolving_ends_the_wait_without_taking_over(operator, worker, line_api):
    ask(operator, worker, line_api, "人と話したいです", user="Uresolve")
    assert "waiting for staff" in operator.get("/console/waiting").get_data(as_text=True)
    operator.post("/console/c/line/Uresolve/resolve", data=form(operator))
    assert "Nobody is waiting" in operator.get("/console/waiting").get_data(as_text=True)
    transcript = operator.get("/console/c/line/Uresolve").get_data(as_text=True)
    assert "sato resolved the request for a person" in transcript and "the bot is answering" in transcript
    assert not worker.states.load("line", "Uresolve").handoff


def test_a_wait_outlasts_the_idle_expiry_of_the_conversation_state(operator, worker, line_api):
    ask(operator, worker, line_api, "I want to talk to a person", user="Ulongwait")
    ttl = worker.redis.ttl(worker.states.key("line", "Ulongwait"))
    assert ttl > worker.settings.state_ttl_seconds  # kept as long as the console shows the wait
    operator.post("/console/c/line/Ulongwait/resolve", data=form(operator))
    assert worker.redis.ttl(worker.states.key("line", "Ulongwait")) <= worker.settings.state_ttl_seconds
