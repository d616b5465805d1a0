"""The worker process: ``python -m bot.worker``.

Loads the NLU once, then runs queue jobs in this same process (RQ's
``SimpleWorker``: no fork per job, so the model is not reloaded and no forked
child inherits torch/OpenMP threads).  Beside the job loop, one thread reports
to /healthz and puts back the jobs of workers that died mid-job, and another
reloads the FAQ when its files change (apart, so a long reload never makes
this worker look dead).
"""
from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import redis
from rq import SimpleWorker
from rq.executions import Execution
from rq.job import JobStatus
from rq.utils import parse_composite_key

from bot import jobs
from bot.app import configure_logging
from bot.dialogue import Dialogue
from bot.health import forget_worker, last_beats, write_heartbeat
from bot.services import build_services
from config.settings import Settings, SettingsError
from nlu import build_nlu

log = logging.getLogger(__name__)
HEARTBEAT_EVERY_S = 5
#: A worker silent this long is gone (SIGKILL, out of memory): four missed reports, whatever the max age says.
ABANDONED_AFTER_S = 20
#: RQ's own registry cleanup (jobs caught between queue and start); its default is ten minutes.
MAINTENANCE_EVERY_S = 60


def build_worker_services(settings: Settings, redis=None, nlu=None, staged: bool = False):
    """Services plus the dialogue (and so the loaded NLU), installed for jobs; ``staged``: start on the
    questions-only index (see ``nlu.engine``)."""
    services = build_services(settings, redis)
    nlu = nlu or build_nlu(settings, overlay=services.overlay.snapshot, staged=staged)
    services.dialogue = Dialogue(
        nlu,
        handoff_after_misses=settings.handoff_after_misses,
        fallback_phone=settings.fallback_phone,
        fallback_url=settings.fallback_url,
        examples=[i.strip() for i in settings.greeting_examples.split(",") if i.strip()],
    )
    jobs.install(services)
    return services


def reload_faq(services) -> None:
    """Pick up edits of the FAQ files and the phrasings operators accepted."""
    services.dialogue.nlu.reload_if_changed()


def report(services, name: str) -> list[str]:
    """One heartbeat: tell /healthz what this worker serves, then rescue dead workers' jobs."""
    write_heartbeat(services.redis, name, services.dialogue.nlu.status(),
                    services.settings.worker_heartbeat_max_age_seconds)
    return requeue_abandoned(services.queue, last_beats(services.redis))


def requeue_abandoned(queue, beats: dict[str, float], now: float | None = None) -> list[str]:
    """Put the jobs of workers that stopped reporting back at the front of the queue, within seconds (RQ's own
    cleanup waits for the job's timeout and its next maintenance round: minutes).  The jobs are safe to run
    again (``bot.jobs`` keeps the decided reply and the sent mark); removing the entry first makes sure only one
    worker puts each back."""
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


def _owner(connection, job, execution_id: str) -> str | None:
    """The worker running the job: its execution record says, or the job's own mark once that has expired."""
    try:
        return Execution.fetch(execution_id, job.id, connection).worker_name
    except ValueError:
        return job.worker_name


def _every(seconds: float, action, stop: threading.Event, what: str) -> None:
    while not stop.wait(seconds):
        try:
            action()
        except redis.RedisError as error:  # an outage: one line, the job loop says the rest
            log.warning("%s: Redis unavailable (%s)", what, error)
        except Exception:  # noqa: BLE001 - a failed round must not kill the thread; /healthz will show it
            log.exception("%s failed", what)


class Stopped(Exception):
    """SIGTERM while no job loop runs (inside one, RQ's own warm shutdown handles it)."""


def _stop(signum, frame):
    raise Stopped


def main() -> None:
    signal.signal(signal.SIGTERM, _stop)
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        sys.exit(f"Cannot start: {error}")
    configure_logging(settings)
    try:
        serve(settings)
    except Stopped:
        log.info("stopped before taking jobs")
    # The index thread may still be inside the model's native code: tearing it down with the interpreter aborts
    # the process (exit -6), which a PaaS reports as a crash. The queue work is done; leave at once.
    logging.shutdown()
    os._exit(0)


class Worker(SimpleWorker):
    """RQ's in-process worker, remembering whether it was asked to stop or fell out of its loop (Redis lost)."""

    stop_requested = False

    def handle_warm_shutdown_request(self):
        self.stop_requested = True
        super().handle_warm_shutdown_request()


def serve(settings: Settings) -> None:
    """Load the NLU, report, and take jobs until a graceful stop; after a Redis outage, take them up again."""
    if settings.is_local:
        log.warning("BOT_MODE=local: replies go to the local stand-ins, not to LINE or Slack")
    services = build_worker_services(settings, staged=True)
    current = {}  # the name this process reports under: a new one after each outage, so that the old one's
    stop = threading.Event()  # unfinished job is seen as abandoned and put back
    beats = (HEARTBEAT_EVERY_S, lambda: report(services, current["name"]) if current else None, stop, "heartbeat")
    threading.Thread(target=_every, args=beats, daemon=True, name="heartbeat").start()
    reloads = (HEARTBEAT_EVERY_S, lambda: reload_faq(services), stop, "FAQ reload")
    threading.Thread(target=_every, args=reloads, daemon=True, name="faq-reload").start()
    threading.Thread(target=services.dialogue.nlu.complete_index, daemon=True, name="index").start()
    try:
        while True:
            worker = Worker([services.queue], connection=services.redis, maintenance_interval=MAINTENANCE_EVERY_S)
            report(services, worker.name)
            current["name"] = worker.name
            log.info("worker %s ready: %d FAQ entries, queue %r", worker.name,
                     len(services.dialogue.nlu.faq.entries), settings.queue_name)
            try:
                worker.work(with_scheduler=True)
            except redis.RedisError as error:
                log.warning("worker %s lost Redis (%s)", worker.name, error)
            signal.signal(signal.SIGTERM, _stop)  # RQ's handler goes with its loop
            if worker.stop_requested:
                return
            _wait_for_redis(services.redis)
    finally:
        stop.set()
        if current:
            _quietly(forget_worker, services.redis, current["name"])


def _wait_for_redis(client) -> None:
    """Back off until Redis answers again, one line a try, no traceback."""
    delay = 1.0
    while not _quietly(client.ping):
        log.warning("Redis unavailable: the worker tries again in %.0f s", delay)
        time.sleep(delay)
        delay = min(delay * 2, 30.0)


def _quietly(action, *args):
    """``action(*args)``, or None when Redis is unavailable."""
    try:
        return action(*args)
    except redis.RedisError:
        return None


if __name__ == "__main__":
    main()
