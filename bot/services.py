"""The connections and stores a process needs, built once from settings.

The web process builds these without the NLU; the worker adds the dialogue
(and with it the model).  Nothing here runs at import time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

from rq import Queue, Retry
from rq.exceptions import DuplicateJobError

from bot.convlog import ConversationLog
from bot.faq_overlay import FaqOverlay
from bot.handover import Handover
from bot.metrics import WorkerMetrics
from bot.platforms.line import LineAdapter
from bot.platforms.slack import SlackAdapter
from bot.redis_conn import connect
from bot.state import StateStore
from bot.unanswered import Unanswered
from config.settings import Settings


_JOB_TIMEOUT_S = 120  # an NLU answer takes milliseconds, a send seconds; recording a send may wait a minute for Redis


@dataclass
class Services:
    settings: Settings
    redis: object
    queue: Queue
    adapters: dict  # platform name -> adapter
    states: StateStore
    convlog: ConversationLog
    handover: Handover
    unanswered: Unanswered
    overlay: FaqOverlay
    metrics: WorkerMetrics
    started_at: float  # when this run of the process began: /healthz counts workers that reported since
    dialogue: object = None  # bot.dialogue.Dialogue, only in workers

    def enqueue(self, function: str, *args, description: str, job_id: str | None = None) -> bool:
        """Queue a job by its name (the web process never imports the NLU), retried with backoff after a
        transient failure (the jobs are safe to repeat).  RQ logs the ``description``, which names ids only,
        instead of the arguments, which carry residents' and operators' text.  A finished job leaves nothing in
        Redis (its outcome is in the conversation log): RQ kept each for 500 s, about 6 KB a message.

        With a ``job_id``, False when a job of that id is still queued, running or failed: RQ checks and queues
        in one script, so a redelivered event needs no mark of its own."""
        retries, intervals = self.settings.job_retries, list(self.settings.job_retry_intervals)
        retry = Retry(max=retries, interval=intervals) if retries else None
        try:
            self.queue.enqueue(function, *args, description=description, retry=retry, job_timeout=_JOB_TIMEOUT_S,
                               result_ttl=0, failure_ttl=7 * 86400, job_id=job_id, unique=job_id is not None)
        except DuplicateJobError:
            return False
        return True


def build_services(settings: Settings, redis=None) -> Services:
    redis = redis if redis is not None else connect(settings)
    line = LineAdapter(
        settings.line_channel_secret,
        settings.line_channel_access_token,
        settings.line_api_base_url,
        settings.reply_token_max_age_seconds,
    )
    adapters = {line.platform: line}
    if settings.slack_enabled:
        adapters["slack"] = SlackAdapter(
            settings.slack_signing_secret, settings.slack_bot_token, settings.slack_api_base_url
        )
    return Services(
        settings=settings,
        redis=redis,
        queue=Queue(settings.queue_name, connection=redis),
        adapters=adapters,
        states=StateStore(redis, settings.state_ttl_seconds, settings.log_retention_days * 86400),
        handover=Handover(redis, settings.log_retention_days * 86400),
        unanswered=Unanswered(redis, settings.log_retention_days),
        overlay=FaqOverlay(redis),
        metrics=WorkerMetrics(redis),
        started_at=settings.web_started_at or time.time(),
        convlog=ConversationLog(
            redis,
            settings.log_retention_days,
            settings.log_conversation_maxlen,
            settings.log_global_maxlen,
            settings.log_redact,
        ),
    )
