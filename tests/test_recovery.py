"""Accepted messages keep moving: a dead worker's job goes back to the queue, due retries are enqueued."""
import time
from datetime import datetime, timedelta, timezone

from rq import Retry, SimpleWorker
from rq.job import JobStatus

from bot.health import last_beats
from bot.recovery import ABANDONED_AFTER_S, enqueue_due_retries, requeue_abandoned, requeue_stranded
from bot.worker import report


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


def test_a_due_retry_goes_to_the_front_of_the_queue_once(worker):
    waiting = worker.queue.enqueue("bot.jobs.handle_event", "line", {})
    retry = worker.queue.enqueue("bot.jobs.handle_event", "line", {}, retry=Retry(max=2, interval=30))
    worker.queue.remove(retry)
    worker.queue.schedule_job(retry, datetime.now(timezone.utc) + timedelta(seconds=30))
    assert enqueue_due_retries(worker.queue) == []  # not yet
    assert enqueue_due_retries(worker.queue, time.time() + 31) == [retry.id]
    assert worker.queue.get_job_ids() == [retry.id, waiting.id]
    assert enqueue_due_retries(worker.queue, time.time() + 31) == []


def test_a_job_taken_from_the_queue_but_never_started_goes_back_once(worker):
    job = worker.queue.enqueue("bot.jobs.handle_event", "line", {})
    taken = worker.queue.intermediate_queue
    worker.redis.lmove(worker.queue.key, taken.key)  # as a worker's dequeue does, just before it lost Redis
    now = time.time()
    assert requeue_stranded(worker.queue, now) == []  # first seen now: a live worker may be starting it
    assert requeue_stranded(worker.queue, now + ABANDONED_AFTER_S + 1) == [job.id]
    assert worker.queue.get_job_ids() == [job.id] and taken.get_job_ids() == []
    assert requeue_stranded(worker.queue, now + 2 * ABANDONED_AFTER_S) == []  # put back once


def test_a_job_being_started_is_left_to_its_worker(worker):
    job = _started_by(worker, "alive")
    worker.redis.rpush(worker.queue.intermediate_queue.key, job.id)
    assert requeue_stranded(worker.queue, time.time() + ABANDONED_AFTER_S + 1) == []
