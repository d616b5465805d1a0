"""The worker process: ``python -m bot.worker``.

Loads the NLU once, then runs queue jobs in this same process (RQ's
``SimpleWorker``: no fork per job, so the model is not reloaded and no forked
child inherits torch/OpenMP threads).  A heartbeat thread tells /healthz the
worker is alive and reloads the FAQ when its files change.
"""
from __future__ import annotations

import logging
import threading

from rq import SimpleWorker

from bot import jobs
from bot.app import configure_logging
from bot.dialogue import Dialogue
from bot.health import write_heartbeat
from bot.services import build_services
from config.settings import Settings
from nlu import build_nlu

log = logging.getLogger(__name__)
HEARTBEAT_EVERY_S = 5


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


def beat(services) -> None:
    """One heartbeat: pick up FAQ edits, then report what is being served."""
    nlu = services.dialogue.nlu
    nlu.reload_if_changed()
    write_heartbeat(services.redis, nlu.status(), ttl_seconds=services.settings.worker_heartbeat_max_age_seconds)


def _beat_forever(services, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_EVERY_S):
        try:
            beat(services)
        except Exception:  # noqa: BLE001 - a failed beat must not kill the thread; /healthz will show it
            log.exception("heartbeat failed")


def main() -> None:
    settings = Settings.from_env()
    configure_logging(settings)
    services = build_worker_services(settings, staged=True)
    beat(services)
    stop = threading.Event()
    threading.Thread(target=_beat_forever, args=(services, stop), daemon=True, name="heartbeat").start()
    threading.Thread(target=services.dialogue.nlu.complete_index, daemon=True, name="index").start()
    log.info("worker ready: %d FAQ entries, queue %r", len(services.dialogue.nlu.faq.entries), settings.queue_name)
    try:
        SimpleWorker([services.queue], connection=services.redis).work(with_scheduler=True)
    finally:
        stop.set()


if __name__ == "__main__":
    main()
