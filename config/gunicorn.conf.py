"""gunicorn settings for the web process (``web:`` in the Procfile).

The webhook only verifies and enqueues, so a few threaded workers carry a
city's traffic; the NLU lives in the worker process, not here.
"""
import os
import sys
import tempfile
import time
from pathlib import Path

from config.settings import Settings, SettingsError

# Metrics of every gunicorn process, added up at /metrics (prometheus-client's multiprocess mode). Set before
# any process imports prometheus_client; a folder of this boot's own unless the deployer names one.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bot-metrics-"))

bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30  # a webhook request must never take this long; kill a stuck worker
graceful_timeout = 20
keepalive = 5
# No max_requests: recycling restarted both workers within a second of each other under even load, and a webhook
# waited 3.6 s for a fresh one.
accesslog = "-"
# The path without its query string, and no referrer: console search terms travel in query strings.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms "%(a)s"'
logger_class = "config.gunicorn_logging.AccessLogger"  # leaves out the console's successful polls
errorlog = "-"


def on_starting(server):
    """Check the settings once, before any worker starts: a missing or bad one stops the boot with one line
    naming it, instead of a traceback from each worker."""
    # /healthz counts only workers that reported during this run, whichever gunicorn process answers
    os.environ["WEB_STARTED_AT"] = str(time.time())
    try:
        settings = Settings.from_env()
    except SettingsError as error:
        sys.exit(f"Cannot start: {error}")
    folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.db"):  # counts of an earlier boot are not this one's
        stale.unlink()
    if settings.is_local:
        server.log.warning("BOT_MODE=local: chat page at /, console sign-in operator / operator, replies go to "
                           "local stand-ins, not to LINE or Slack. Never expose this to the internet.")


def child_exit(server, worker):
    """A gunicorn worker that exits leaves its metric files for the others to sum; mark it dead."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
