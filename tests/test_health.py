"""/healthz is green only with Redis, a live worker and an FAQ."""
import os
import signal
import threading
import time

import bot.worker
from bot.app import create_app
from bot.health import BEATS_KEY, forget_worker
from bot.worker import report, serve


def test_healthz_is_503_until_a_worker_has_reported(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["worker"] == "no heartbeat"


def test_healthz_is_200_once_the_worker_reports(client, worker):
    report(worker, "worker-1")
    body = client.get("/healthz").get_json()
    assert body["ok"] is True and body["faq_entries"] >= 40 and body["redis"] == "ok"
    assert body["faq_index"] == "complete" and body["outside_questions"] == 0 and body["workers"] == 1


def test_a_worker_that_stops_gracefully_stops_counting_at_once(client, worker):
    report(worker, "worker-1")
    forget_worker(worker.redis, "worker-1")
    assert client.get("/healthz").status_code == 503


def test_a_graceful_stop_forgets_the_worker_even_with_a_heartbeat_in_flight(client, worker, monkeypatch):
    """The stop used to forget the worker while its heartbeat thread was still reporting: the late report brought
    it back, and /healthz said 200 for a stopped worker until the report aged out (CI, 2026-12-02)."""
    stopping, in_flight = threading.Event(), threading.Event()

    def slow_report(services, name):
        if stopping.is_set() and threading.current_thread().name == "heartbeat":
            in_flight.set()
            time.sleep(0.5)  # still on its way when the job loop has ended
        return report(services, name)

    def stop_while_reporting():
        deadline = time.monotonic() + 30
        while not worker.redis.zcard(BEATS_KEY) and time.monotonic() < deadline:
            time.sleep(0.01)
        stopping.set()
        in_flight.wait(10)
        os.kill(os.getpid(), signal.SIGTERM)  # as the platform stops a worker

    monkeypatch.setattr(bot.worker, "report", slow_report)
    monkeypatch.setattr(bot.worker, "HEARTBEAT_EVERY_S", 0.05)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    threading.Thread(target=stop_while_reporting, daemon=True).start()
    try:
        serve(worker, shows_loading=False)  # RQ's job loop takes signals only in the main thread
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert in_flight.is_set()
    time.sleep(1)  # any report still on its way has landed
    assert worker.redis.zcard(BEATS_KEY) == 0
    assert client.get("/healthz").status_code == 503


def test_a_silent_worker_stops_counting_after_the_max_age(client, worker, redis):
    report(worker, "worker-1")
    redis.zadd("workers:beats", {"worker-1": time.time() - worker.settings.worker_heartbeat_max_age_seconds - 1})
    assert client.get("/healthz").get_json()["worker"] == "no heartbeat"


def test_a_restarted_web_process_does_not_count_a_worker_of_the_previous_run(settings, redis, worker):
    report(worker, "killed-before-the-restart")
    restarted = create_app(settings.replace(web_started_at=time.time() + 1), redis=redis).test_client()
    assert restarted.get("/healthz").status_code == 503


def test_healthz_is_503_when_redis_is_unreachable(settings):
    client = create_app(settings.replace(redis_url="redis://127.0.0.1:1/0")).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["redis"].startswith("unreachable")


def test_a_backlog_older_than_the_reply_token_is_reported_as_degraded_but_healthy(client, worker, redis):
    report(worker, "worker-1")
    assert client.get("/healthz").get_json()["degraded"] is False
    job = worker.queue.enqueue("bot.jobs.handle_event", "line", {})
    redis.hset(job.key, "enqueued_at", "2026-01-01T00:00:00.000000Z")  # it has waited for months
    body = client.get("/healthz")
    assert body.status_code == 200 and body.get_json()["degraded"] is True
    assert body.get_json()["oldest_waiting_s"] > worker.settings.reply_token_max_age_seconds
