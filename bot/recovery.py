"""What keeps accepted messages moving when a worker dies or Redis blinks.

RQ leaves both to processes of its own timing: a dead worker's job waits in
the started registry for the job's timeout and RQ's next maintenance round
(minutes), and retries wait for RQ's scheduler, a separate process that dies
on a Redis connection error and is orphaned when its worker is killed.  Each
worker does both here instead, every few seconds, in its own threads; claiming
a job by removing it from its registry first makes sure only one worker moves it.
"""
from __future__ import annotations

import logging
import time

from rq.executions import Execution
from rq.job import JobStatus
from rq.utils import parse_composite_key

log = logging.getLogger(__name__)
#: A worker silent this long is gone (SIGKILL, out of memory): four missed reports, whatever the max age says.
ABANDONED_AFTER_S = 20


def requeue_abandoned(queue, beats: dict[str, float], now: float | None = None) -> list[str]:
    """Put the jobs of workers that stopped reporting back at the front of the queue.  They are safe to run
    again: ``bot.jobs`` keeps the decided reply and marks what was sent."""
    now = time.time() if now is None else now
    registry, connection = queue.started_job_registry, queue.connection
    requeued = []
    for entry in connection.zrange(registry.key, 0, -1):
        job_id, execution_id = parse_composite_key(entry.decode())
        job = queue.fetch_job(job_id)
        if job is None or job.get_status(refresh=False) != JobStatus.STARTED:
            continue  # finished meanwhile, or gone: RQ's cleanup handles leftovers
        owner = _owner(connection, job, execution_id)
        if owner and now - beats.get(owner, 0) < ABANDONED_AFTER_S:
            continue
        if connection.zrem(registry.key, entry):
            queue.enqueue_job(job, at_front=True)
            requeued.append(job_id)
            log.warning("job %s of worker %s, which stopped reporting, is back in the queue", job_id, owner)
    return requeued


def requeue_stranded(queue, now: float | None = None) -> list[str]:
    """Put back at the front of the queue the jobs a worker took but never started (it lost Redis, or died,
    between the two): RQ's own maintenance would fail them as stuck only after minutes.  A live worker starts
    what it takes within milliseconds, so a job first seen there ``ABANDONED_AFTER_S`` ago is stranded."""
    now = time.time() if now is None else now
    taken, connection = queue.intermediate_queue, queue.connection
    moved = []
    for job_id in taken.get_job_ids():
        if job_id in queue.started_job_registry:
            continue
        taken.set_first_seen(job_id)  # shared by every worker, in Redis
        first = taken.get_first_seen(job_id)
        if first is None or now - first.timestamp() < ABANDONED_AFTER_S:
            continue
        if connection.lrem(taken.key, 1, job_id):  # claimed: only one worker moves it
            connection.delete(taken.get_first_seen_key(job_id))
            job = queue.fetch_job(job_id)
            if job is not None:
                queue.enqueue_job(job, at_front=True)
                moved.append(job_id)
                log.warning("job %s was taken from the queue but never started; it is back in the queue", job_id)
    return moved


def _owner(connection, job, execution_id: str) -> str | None:
    """The worker running the job: its execution record says, or the job's own mark once that has expired."""
    try:
        return Execution.fetch(execution_id, job.id, connection).worker_name
    except ValueError:
        return job.worker_name


def enqueue_due_retries(queue, now: float | None = None) -> list[str]:
    """Move the retries whose time has come from the scheduled registry to the front of the queue."""
    registry, connection = queue.scheduled_job_registry, queue.connection
    moved = []
    for job_id in registry.get_jobs_to_schedule(int(time.time() if now is None else now)):
        if not connection.zrem(registry.key, job_id):
            continue  # another worker moved it
        job = queue.fetch_job(job_id)
        if job is not None:
            queue.enqueue_job(job, at_front=True)
            moved.append(job_id)
    return moved
