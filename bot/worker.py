"""The worker: ``python -m bot.worker``.

Loads the NLU once, then runs queue jobs in the same process (RQ's
``SimpleWorker``: no fork per job, so the model is not reloaded; no scheduler
process either, see ``bot.recovery``).  With ``WORKER_PROCESSES`` above one
(default: one per core), the models are loaded and the FAQ indexed first, then
that many job-taking processes are forked: they share the loaded pages, each
runs the models on one thread (a thread pool does not survive a fork), and one
that dies is replaced.  Beside each job loop, one thread reports to /healthz and
puts back the jobs of workers that died mid-job, one enqueues due retries, and
one reloads the FAQ when its files change (apart, so a long reload never makes
this worker look dead); beside one loop a box, one shows LINE's loading animation
to messages waiting in the queue (``bot.loading``).  A lost Redis is waited for,
and the loop taken up again.
"""
from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import threading
import time

import redis
from rq import SimpleWorker

from bot import jobs
from bot.app import configure_logging
from bot.dialogue import Dialogue
from bot.health import forget_worker, last_beats, write_heartbeat
from bot.loading import LoadingAnimations
from bot.messages import SendError
from bot.recovery import enqueue_due_retries, requeue_abandoned, requeue_stranded
from bot.services import build_services
from config.settings import Settings, SettingsError
from nlu import build_nlu

log = logging.getLogger(__name__)
HEARTBEAT_EVERY_S = 5
RETRIES_EVERY_S = 1  # a retry due in 2 s goes out within 3
LOADING_EVERY_S = 0.5
#: How long a graceful stop waits for a heartbeat in flight, which would otherwise land after the worker is
#: forgotten and show /healthz a stopped worker as alive; a report stuck on Redis is not waited for longer.
STOP_WAITS_FOR_REPORT_S = 10
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
        city_phone=settings.city_contact_phone,
        city_url=settings.city_contact_url,
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
    return requeue_abandoned(services.queue, last_beats(services.redis)) + requeue_stranded(services.queue)


def _every(seconds: float, action, stop: threading.Event, what: str) -> None:
    outage = False
    while not stop.wait(seconds):
        try:
            action()
            outage = False
        except redis.RedisError as error:  # one line an outage, not one a round; the job loop says the rest
            if not outage:
                log.warning("%s paused: Redis unavailable (%s)", what, error)
            outage = True
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
        if settings.worker_process_count > 1:
            supervise(settings.replace(nlu_threads=1), settings.worker_process_count)
        else:
            serve(build_worker_services(settings, staged=True))
    except Stopped:
        log.info("stopped before taking jobs")
    # The index thread may still be inside the model's native code: tearing it down with the interpreter aborts
    # the process (exit -6), which a PaaS reports as a crash. The queue work is done; leave at once.
    logging.shutdown()
    os._exit(0)


def supervise(settings: Settings, count: int) -> None:
    """Load and index once, fork ``count`` job-taking processes, replace any that dies, and on SIGTERM wait for
    them to finish their jobs (each gets the signal too)."""
    services = build_worker_services(settings)
    services.dialogue.nlu.complete_index()  # the whole index and the re-ranker's cache now: forked processes share it
    gc.freeze()  # the loaded objects stay out of the collector's sweeps, which would copy their pages per process
    log.info("forking %d job-taking processes (WORKER_PROCESSES), one model thread each", count)
    children = {_fork(services, n): n for n in range(count)}
    stopping = False

    def stop_children(signum, frame):
        nonlocal stopping
        stopping = True
        for pid in children:
            _quietly_signal(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    while children:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            break
        n = children.pop(pid, None)
        if n is None or stopping:
            continue
        log.error("job-taking process %d (pid %d) exited (%s); starting another", n, pid,
                  os.waitstatus_to_exitcode(status))
        time.sleep(1)  # a process that dies at once must not become a fork loop
        if not stopping:
            children[_fork(services, n)] = n
    log.info("every job-taking process has stopped")


def _fork(services, n: int) -> int:
    """A job-taking process: the parent gets its pid, the child serves until stopped and never returns.  SIGTERM
    is held back across the fork, so one that comes before the child has its own handler is not taken by the
    supervisor's (which the child would otherwise run)."""
    parent = os.getpid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    pid = os.fork()
    if pid:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        return pid
    try:
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})
        _stop_with_parent(parent)
        serve(services, shows_loading=n == 0)
    except Stopped:
        pass
    except BaseException:  # noqa: BLE001 - logged, then the supervisor starts another
        log.exception("job-taking process %d failed", n)
        logging.shutdown()
        os._exit(1)
    logging.shutdown()
    os._exit(0)


def _stop_with_parent(parent: int) -> None:
    """Ask Linux for SIGTERM when the supervisor dies (even by SIGKILL), so no orphan keeps taking jobs beside the
    processes of its replacement."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the platform stops the whole box instead
        return
    if os.getppid() != parent:  # it died before the request was made
        raise Stopped


def _quietly_signal(pid: int, sig) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Worker(SimpleWorker):
    """RQ's in-process worker, remembering whether it was asked to stop or fell out of its loop (Redis lost)."""

    stop_requested = False

    def handle_warm_shutdown_request(self):
        self.stop_requested = True
        super().handle_warm_shutdown_request()

    def request_stop(self, signum, frame):
        """SIGTERM finishes the job in hand, however often it comes: the platform signals every process of a box
        and the supervisor passes it on, and RQ would take a second one as an order to drop the job."""
        if self.stop_requested and signum == signal.SIGTERM:
            return
        super().request_stop(signum, frame)

    def handle_exception(self, job, *exc_info):
        """A platform's transient error is expected and retried: one line, no traceback."""
        if isinstance(exc_info[1], SendError):
            self.log.warning("%s: %s; retried later", job.description, exc_info[1])
            return
        super().handle_exception(job, *exc_info)


def serve(services, shows_loading: bool = True) -> None:
    """Report and take jobs until a graceful stop; after a Redis outage, take them up again."""
    settings = services.settings
    if settings.is_local:
        log.warning("BOT_MODE=local: replies go to the local stand-ins, not to LINE or Slack")
    # The name this process reports under: a new one after each outage, so that a job the old loop left unfinished
    # is seen as abandoned and put back.
    current = {}
    stop = threading.Event()
    beats = (HEARTBEAT_EVERY_S, lambda: report(services, current["name"]) if current else None, stop, "heartbeat")
    heartbeat = threading.Thread(target=_every, args=beats, daemon=True, name="heartbeat")
    heartbeat.start()
    retries = (RETRIES_EVERY_S, lambda: enqueue_due_retries(services.queue), stop, "retries")
    threading.Thread(target=_every, args=retries, daemon=True, name="retries").start()
    reloads = (HEARTBEAT_EVERY_S, lambda: reload_faq(services), stop, "FAQ reload")
    threading.Thread(target=_every, args=reloads, daemon=True, name="faq-reload").start()
    if shows_loading:
        loading = (LOADING_EVERY_S, LoadingAnimations(services).round, stop, "loading animations")
        threading.Thread(target=_every, args=loading, daemon=True, name="loading").start()
    threading.Thread(target=services.dialogue.nlu.complete_index, daemon=True, name="index").start()  # if staged
    try:
        while True:
            worker = Worker([services.queue], connection=services.redis, maintenance_interval=MAINTENANCE_EVERY_S)
            report(services, worker.name)
            current["name"] = worker.name
            log.info("worker %s ready: %d FAQ entries, queue %r", worker.name,
                     len(services.dialogue.nlu.faq.entries), settings.queue_name)
            try:
                worker.work()
            except redis.RedisError as error:
                log.warning("worker %s lost Redis (%s)", worker.name, error)
            signal.signal(signal.SIGTERM, _stop)  # RQ's handler goes with its loop
            if worker.stop_requested:
                return
            _wait_for_redis(services.redis)
    finally:
        stop.set()
        heartbeat.join(timeout=STOP_WAITS_FOR_REPORT_S)
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
