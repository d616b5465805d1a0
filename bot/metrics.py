"""``GET /metrics``: Prometheus text, for alerts on a growing queue or failing sends.

The web process and the worker may run on different machines (a PaaS gives
each process type its own), so the numbers come from two places:

- the web process's own (webhook requests, acknowledgement time), kept by
  prometheus-client and summed over gunicorn's processes by its multiprocess
  mode (``PROMETHEUS_MULTIPROC_DIR``, set up by ``config/gunicorn.conf.py``);
- the worker's (decisions, NLU time, webhook-to-reply time, send failures),
  added up in one Redis hash that every worker on every machine writes to, and
  the queue's state, read from Redis at each scrape.

Protected by ``METRICS_TOKEN`` (a bearer token); 404 while it is unset.
"""
from __future__ import annotations

import hmac
import os
import time

import redis
from flask import Blueprint, Response, current_app, g, request
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from bot.health import live_workers, oldest_waiting_s

bp = Blueprint("metrics", __name__)
COUNTS_KEY = "metrics:counts"  # hash: "name|label=value,…" or "name|le=bound" / "name|sum" / "name|count" -> number
_WEBHOOK_ENDPOINTS = {"webhook.line_callback": "line", "webhook.slack_events": "slack"}
_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

WEBHOOK_REQUESTS = Counter("bot_webhook_requests", "Webhook requests by platform and HTTP status",
                           ["platform", "status"])
WEBHOOK_SECONDS = Histogram("bot_webhook_ack_seconds", "Time to acknowledge a webhook request", ["platform"],
                            buckets=_SECONDS)

#: The worker's metrics: name -> (kind, help, label names or histogram buckets).
WORKER_METRICS = {
    "bot_decisions": ("counter", "Incoming turns by the bot's decision and language", ("decision", "lang")),
    "bot_send_failures": ("counter", "Messages the platform did not take, by platform and kind: transient (retried), "
                          "given-up (retries spent), permanent, unconfirmed (the worker died during the send)",
                          ("platform", "kind")),
    "bot_nlu_seconds": ("histogram", "NLU time per question", _SECONDS),
    "bot_reply_seconds": ("histogram", "From the webhook accepting a message to the platform accepting the reply",
                          _SECONDS),
}


class WorkerMetrics:
    """What a worker records for /metrics: one pipelined round trip per call."""

    def __init__(self, client):
        self.redis = client

    def decided(self, decision: str, lang: str, nlu_seconds: float | None) -> None:
        pipe = self.redis.pipeline(transaction=False)
        _count(pipe, "bot_decisions", decision=decision or "none", lang=lang or "none")
        if nlu_seconds is not None:
            _observe(pipe, "bot_nlu_seconds", nlu_seconds)
        pipe.execute()

    def replied(self, seconds: float) -> None:
        pipe = self.redis.pipeline(transaction=False)
        _observe(pipe, "bot_reply_seconds", seconds)
        pipe.execute()

    def send_failed(self, platform: str, kind: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        _count(pipe, "bot_send_failures", platform=platform, kind=kind)
        pipe.execute()


def _count(pipe, name: str, **labels) -> None:
    pipe.hincrby(COUNTS_KEY, f"{name}|" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())), 1)


def _observe(pipe, name: str, seconds: float) -> None:
    """Histogram buckets stored one by one (not cumulative); the scrape adds them up."""
    bound = next((b for b in WORKER_METRICS[name][2] if seconds <= b), "+Inf")
    pipe.hincrby(COUNTS_KEY, f"{name}|le={bound}", 1)
    pipe.hincrbyfloat(COUNTS_KEY, f"{name}|sum", seconds)
    pipe.hincrby(COUNTS_KEY, f"{name}|count", 1)


class SharedCollector:
    """The worker's numbers and the queue's state, read from Redis when Prometheus scrapes."""

    def __init__(self, services):
        self.services = services

    def collect(self):
        services = self.services
        raw = {k.decode(): v.decode() for k, v in services.redis.hgetall(COUNTS_KEY).items()}
        for name, (kind, help_text, spec) in WORKER_METRICS.items():
            fields = {k.split("|", 1)[1]: v for k, v in raw.items() if k.split("|", 1)[0] == name}
            if kind == "counter":
                family = CounterMetricFamily(name, help_text, labels=spec)
                for labels, value in fields.items():
                    pairs = dict(part.split("=", 1) for part in labels.split(","))
                    family.add_metric([pairs.get(label, "") for label in spec], float(value))
            else:
                family = HistogramMetricFamily(name, help_text)
                running, buckets = 0, []
                for bound in (*spec, "+Inf"):
                    running += int(fields.get(f"le={bound}", 0))
                    buckets.append((str(bound), running))
                family.add_metric([], buckets, float(fields.get("sum", 0)))
            yield family
        queue = services.queue
        yield GaugeMetricFamily("bot_queue_depth", "Messages waiting for a worker", value=queue.count)
        yield GaugeMetricFamily("bot_queue_oldest_age_seconds", "How long the oldest waiting message has waited",
                                value=oldest_waiting_s(queue))
        yield GaugeMetricFamily("bot_retries_scheduled", "Jobs waiting to be retried after a failure",
                                value=queue.scheduled_job_registry.count)
        yield GaugeMetricFamily("bot_jobs_failed", "Jobs that failed for good (kept for a week)",
                                value=queue.failed_job_registry.count)
        yield GaugeMetricFamily("bot_workers_alive", "Workers that reported within WORKER_HEARTBEAT_MAX_AGE_SECONDS",
                                value=len(live_workers(services)))


@bp.before_app_request
def _start_timer():
    g.metrics_started = time.perf_counter()


@bp.after_app_request
def _count_webhook(response):
    platform = _WEBHOOK_ENDPOINTS.get(request.endpoint or "")
    if platform:
        WEBHOOK_REQUESTS.labels(platform, str(response.status_code)).inc()
        WEBHOOK_SECONDS.labels(platform).observe(time.perf_counter() - g.metrics_started)
    return response


@bp.get("/metrics")
def metrics():
    services = current_app.extensions["bot"]
    token = services.settings.metrics_token
    if not token:
        return Response("not found\n", 404, mimetype="text/plain")
    sent = request.headers.get("Authorization", "")
    if not hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        return Response("a bearer token (METRICS_TOKEN) is required\n", 401, mimetype="text/plain",
                        headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    shared = CollectorRegistry()
    shared.register(SharedCollector(services))
    try:
        body = _web_metrics() + generate_latest(shared)
    except redis.RedisError as error:
        return Response(f"Redis unavailable: {error}\n", 503, mimetype="text/plain")
    return Response(body, mimetype="text/plain; version=0.0.4; charset=utf-8")


def _web_metrics() -> bytes:
    """This process's counts, or all gunicorn processes' where they share a folder."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)
