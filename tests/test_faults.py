"""Faults the Procfile's processes meet in service: a worker killed during a send, Redis lost during one, a Redis
blip before a due retry; every message answered exactly once, and no resident's or operator's text in any log."""
import json
import re
import subprocess
import time
from pathlib import Path

import redis as redis_client
import requests
from slack_sdk.signature import SignatureVerifier
from werkzeug.security import generate_password_hash

from bot.local_chat import line_event
from tests.conftest import SLACK_SECRET, slack_message
from tests.procfile import post_line_event, production, redis_server_with_aof, status, wait_until  # noqa: F401

QUESTION = "QRコードの登録はどうすれば良いですか？"


def _sending(client, event) -> bool:
    return bool(client.exists(f"event:sending:line:{event['webhookEventId']}"))


def _sent(client, event) -> bool:
    return bool(client.exists(f"event:sent:line:{event['webhookEventId']}"))


def test_a_worker_killed_while_line_takes_its_reply_answers_once(production, redis, line_api):
    production("web")
    first = production("worker", WORKER_PROCESSES="2")
    wait_until(lambda: status(production.url + "/healthz") == 200, 180, "the worker is up")
    children = subprocess.run(["pgrep", "-P", str(first.popen.pid)], capture_output=True, text=True).stdout.split()
    command = Path(f"/proc/{first.popen.pid}/cmdline").read_bytes()
    assert len(children) == 2 and all(Path(f"/proc/{pid}/cmdline").read_bytes() == command for pid in children)
    # no scheduler process: only the job-taking processes, forked
    line_api.hold_next("/v2/bot/message/reply", 5)  # LINE takes the reply, but answers only after the kill
    event = line_event("Ukilledmidsend", "message", text=QUESTION)
    assert post_line_event(production.url, event).status_code == 200
    wait_until(lambda: _sending(redis, event), 30, "the worker is sending")
    first.stop(sig=9)
    killed = time.monotonic()
    production("worker")
    wait_until(lambda: _sent(redis, event), 90, "the next worker settles the message")
    assert time.monotonic() - killed < 60
    time.sleep(1)
    assert len(line_api.sent()) == 1  # the held reply; the next worker's reply was refused: its token was used


def test_redis_lost_during_a_send_and_a_blip_before_a_due_retry(production, redis_server_with_aof, line_api):
    server = redis_server_with_aof
    client = redis_client.Redis.from_url(server.url)
    production("web", REDIS_URL=server.url)
    worker = production("worker", REDIS_URL=server.url)
    wait_until(lambda: status(production.url + "/healthz") == 200, 180, "the bot is up")

    line_api.hold_next("/v2/bot/message/reply", 4)
    lost = line_event("Uredislost", "message", text=QUESTION)
    assert post_line_event(production.url, lost).status_code == 200
    wait_until(lambda: _sending(client, lost), 30, "the worker is sending")
    server.stop(9)  # Redis lost while LINE takes the reply
    time.sleep(6)
    server.start()
    wait_until(lambda: _sent(client, lost), 90, "the send is recorded once Redis is back")

    line_api.fail_next(500)  # the first try fails; its retry is due 2 s later
    blip = line_event("Uredisblip", "message", text=QUESTION)
    assert post_line_event(production.url, blip).status_code == 200
    wait_until(lambda: client.zcard("rq:scheduled:events") == 1, 30, "the retry is scheduled")
    server.stop()
    time.sleep(3)
    server.start()
    back = time.monotonic()
    wait_until(lambda: _sent(client, blip), 60, "the due retry goes out")
    assert time.monotonic() - back < 15
    time.sleep(1)
    assert len(line_api.sent()) == 2 and worker.popen.poll() is None  # one answer each; the worker lived on
    assert "Traceback" not in worker.output


def test_no_residents_or_operators_text_reaches_any_log(production, redis, line_api, slack_api, fake_slack):
    secrets = {"resident": "ぼくの電話は090-5555-1234です QRの登録", "slack": "my card number 4111-2222 and QR",
               "search": "Zebrafinch", "operator": "please call 03-7777-8888 about your QR poster"}
    password = "correct horse battery staple"
    env = dict(BOT_MODE="local", CONSOLE_OPERATORS=f"sato:{generate_password_hash(password)}", SECRET_KEY="k",
               SLACK_SIGNING_SECRET=SLACK_SECRET, SLACK_BOT_TOKEN="xoxb-test", SLACK_API_BASE_URL=fake_slack.url + "/api/")
    web, worker = production("web", **env), production("worker", **env)
    wait_until(lambda: status(production.url + "/healthz") == 200, 180, "the bot is up")

    event = line_event("Ulogscan", "message", text=secrets["resident"])
    assert post_line_event(production.url, event).status_code == 200
    _post_slack(production.url, json.dumps(slack_message(secrets["slack"], user="ULOGSCAN")))
    wait_until(lambda: line_api.sent() and slack_api.sent(), 30, "both are answered")

    console = requests.Session()  # local mode: the session cookie travels over plain http
    token = re.search(r'name="csrf_token" value="([^"]+)"', console.get(production.url + "/console/login").text)
    assert console.post(production.url + "/console/login",
                        data={"name": "sato", "password": password, "csrf_token": token.group(1)}).ok
    assert console.get(production.url + "/console/conversations", params={"q": secrets["search"]}).ok
    page = console.get(production.url + "/console/c/line/Ulogscan").text
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    console.post(production.url + "/console/c/line/Ulogscan/takeover", data={"csrf_token": csrf})
    console.post(production.url + "/console/c/line/Ulogscan/send", data={"csrf_token": csrf, "text": secrets["operator"]})
    wait_until(lambda: len(line_api.sent()) == 2, 30, "the operator's message is pushed")

    logs = web.output + worker.output
    assert "/console/conversations" in logs and "line event" in logs  # the logs are there, and read here
    for name, text in secrets.items():
        for fragment in {text, *re.findall(r"[0-9][0-9-]{6,}[0-9]|[A-Za-z]{6,}", text)} - {"please", "poster"}:
            assert fragment not in logs, f"{name} text in the logs: {fragment!r}"


def _post_slack(url: str, body: str) -> None:
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=timestamp, body=body)
    answer = requests.post(url + "/slack/events", data=body.encode(), timeout=5,
                           headers={"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature,
                                    "Content-Type": "application/json"})
    assert answer.status_code == 200
