"""/healthz is green only with Redis, a live worker and an FAQ; dead workers' jobs go back to the queue."""
import time

from rq import SimpleWorker
from rq.job import JobStatus

from bot.app import create_app
from bot.health import forget_worker, last_beats
from bot.worker import ABANDONED_AFTER_S, report, requeue_abandoned


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


def _started_by(worker_services, name):
    """A job taken off the queue by a worker named ``name`` that then died (its execution left as RQ leaves it)."""
    job = worker_services.queue.enqueue("bot.jobs.handle_event", "line", {})
    dead = SimpleWorker([worker_services.queue], connection=worker_services.redis, name=name)
    worker_services.queue.remove(job)
    dead.prepare_execution(job)
    with worker_services.redis.pipeline() as pipe:
        job.prepare_for_execution(name, pipe)
        pipe.execute()
    return job


def test_the_job_of_a_worker_that_stopped_reporting_goes_back_to_the_front_of_the_queue(worker):
    job = _started_by(worker, "killed")
    now = time.time()
    assert requeue_abandoned(worker.queue, {"killed": now - 5}, now) == []  # only late, maybe busy
    assert requeue_abandoned(worker.queue, {"killed": now - ABANDONED_AFTER_S - 1}, now) == [job.id]
    assert worker.queue.get_job_ids() == [job.id] and job.get_status() == JobStatus.QUEUED
    assert worker.queue.started_job_registry.count == 0
    assert requeue_abandoned(worker.queue, {}, now) == []  # put back once


def test_a_live_worker_keeps_its_job(worker):
    job = _started_by(worker, "alive")
    report(worker, "alive")
    assert requeue_abandoned(worker.queue, last_beats(worker.redis)) == []
    assert job.get_status() == JobStatus.STARTED
