"""The Procfile's processes as a PaaS runs them: production unless told otherwise, one line for a missing
setting, a dead worker noticed, and the message it was working on answered once by the next worker."""
import os
import signal
import subprocess
import time

import pytest
import requests
from werkzeug.security import generate_password_hash

from benchmarks.webhook_ack import OPERATOR, OPERATOR_PASSWORD, console_pages
from bot.local_chat import line_event
from tests.procfile import (MAX_AGE_S, post_line_event, post_line_text, production,  # noqa: F401
                            redis_server_with_aof, status, wait_until)

def test_the_procfile_web_without_bot_mode_serves_residents_only(production):
    web = production("web")
    wait_until(lambda: status(production.url + "/healthz") == 503, 30, "the web process answers")  # no worker
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


def test_a_killed_worker_is_noticed_and_its_message_answered_once(production, redis, line_api):
    web = production("web")
    first = production("worker")
    wait_until(lambda: status(production.url + "/healthz") == 200, 180, "the first worker is up")

    line_api.hold_next("/message/reply", 30)  # the job is busy with LINE when its worker dies
    assert post_line_text(production.url, "QRコードの登録はどうすればいいですか？", "Ukilled").status_code == 200
    wait_until(lambda: redis.zcard("rq:wip:events") == 1, 30, "the worker took the job")
    first.stop(sig=9)
    noticed = wait_until(lambda: status(production.url + "/healthz") == 503, MAX_AGE_S + 10, "/healthz fails")
    assert noticed <= MAX_AGE_S + 6

    second = production("worker")
    wait_until(lambda: status(production.url + "/healthz") == 200, 180, "the second worker is up")
    answered = wait_until(lambda: line_api.sent(), 60, "the stranded message is answered")
    assert answered <= 60
    wait_until(lambda: redis.llen("rq:queue:events") == 0 and redis.zcard("rq:wip:events") == 0, 10, "idle")
    assert len(line_api.sent()) == 1

    second.stop(sig=9)  # killed: its last report is fresh when the web process restarts
    web.stop()
    production("web")
    wait_until(lambda: status(production.url + "/healthz") != 0, 30, "the restarted web answers")
    assert status(production.url + "/healthz") == 503  # a worker of the previous run does not count

    third = production("worker")
    wait_until(lambda: status(production.url + "/healthz") == 200, 180, "the third worker is up")
    assert third.stop() == 0  # SIGTERM: a graceful stop
    assert status(production.url + "/healthz") == 503


def test_a_redis_restart_loses_no_acknowledged_message_and_answers_none_twice(production, redis_server_with_aof,
                                                                             line_api):
    server = redis_server_with_aof
    production("web", REDIS_URL=server.url)
    production("worker", REDIS_URL=server.url)
    wait_until(lambda: status(production.url + "/healthz") == 200, 180, "the bot is up")
    events = {f"Urestart{n}": line_event(f"Urestart{n}", "message", text="ワクチンの予約方法は？") for n in range(30)}
    users = list(events)
    statuses = {user: post_line_event(production.url, events[user]).status_code for user in users[:20]}
    server.stop()  # with acknowledged messages still queued
    statuses.update({user: post_line_event(production.url, events[user]).status_code for user in users[20:]})
    server.start()
    assert all(statuses[user] == 200 for user in users[:20]) and all(statuses[user] == 503 for user in users[20:])
    for user in users[20:]:  # LINE redelivers what got 503, the same event, once Redis is back
        redelivered = {**events[user], "deliveryContext": {"isRedelivery": True}}
        wait_until(lambda: post_line_event(production.url, redelivered).status_code == 200, 30,
                   "the web process reconnects")
    ours = {event["replyToken"] for event in events.values()}

    def answers() -> list:  # this test's events only: the fake LINE API is shared by the whole session
        return [r for r in line_api.sent() if r.body.get("replyToken") in ours or r.body.get("to") in events]
    wait_until(lambda: len(answers()) >= len(users), 120, "every message is answered")
    time.sleep(2)
    answered = [r.body.get("replyToken") or r.body.get("to") for r in answers()]
    assert sorted(answered) == sorted(ours), [a for a in answered if answered.count(a) > 1]


def test_open_console_pages_do_not_hold_the_webhooks_threads(production, tmp_path):
    operators = f"{OPERATOR}:{generate_password_hash(OPERATOR_PASSWORD)}"
    # local mode: its session cookie is not Secure, so a client on plain http keeps it
    production("web", BOT_MODE="local", CONSOLE_OPERATORS=operators, SECRET_KEY="k", WEB_CONCURRENCY="1",
               WEB_THREADS="4", LINE_API_BASE_URL="", REDIS_EMBEDDED_PATH=str(tmp_path / "unused.db"))
    wait_until(lambda: status(production.url + "/healthz") == 503, 30, "the web process answers")
    with console_pages(production.url, 12) as polls:  # three times the web process's threads
        wait_until(lambda: len(polls) >= 12, 30, "every page polled once")
        timed = []
        for n in range(40):
            started = time.perf_counter()
            assert post_line_text(production.url, "QRコードの登録は？", f"Upages{n}").status_code == 200
            timed.append(time.perf_counter() - started)
    assert max(timed) < 1.0  # with a thread held per open page they took up to 10 s
    assert {status for _, status in polls} == {200}


def test_one_worker_command_runs_several_job_taking_processes_and_replaces_one_that_dies(production, line_api):
    production("web")
    worker = production("worker", WORKER_PROCESSES="2")
    wait_until(lambda: status(production.url + "/healthz") == 200, 180, "the worker is up")
    workers = lambda: requests.get(production.url + "/healthz", timeout=2).json()["workers"]  # noqa: E731
    wait_until(lambda: workers() == 2, 30, "both processes report")
    children = lambda: [int(pid) for pid in subprocess.run(["pgrep", "-P", str(worker.popen.pid)],  # noqa: E731
                                                            capture_output=True, text=True).stdout.split()]
    first = children()
    assert len(first) == 2
    for n in range(6):
        assert post_line_text(production.url, "QRコードの登録はどうすればいいですか？", f"Umany{n}").status_code == 200
    wait_until(lambda: len(line_api.sent()) == 6, 60, "every message is answered")

    os.kill(first[0], signal.SIGKILL)
    wait_until(lambda: len(children()) == 2 and first[0] not in children(), 30, "a new process replaces the dead one")
    assert "exited (-9); starting another" in worker.output

    assert worker.stop() == 0  # SIGTERM to the supervisor: each process finishes its job and leaves
    assert not children() and "every job-taking process has stopped" in worker.output
    assert "Traceback" not in worker.output
