"""LINE's loading animation for residents whose message waits in the queue.

A message answered at once needs none, and one about to be answered gains nothing from it; so it is not the
job that shows it but one process per box, which looks at the queue every second and shows it once for each
message that has waited ``LOADING_ANIMATION_AFTER_MS``: no backlog, no call.  The animation lasts until the
answer arrives (at most a minute).
"""
from __future__ import annotations

import time
from collections import OrderedDict

from rq.job import Job

from bot.messages import TEXT

#: How far into the queue it looks: beyond this the message waits its turn to be looked at.
WINDOW = 1000
SHOWN_S = 60  # LINE's longest
_REMEMBERED = 5 * WINDOW


class LoadingAnimations:
    def __init__(self, services):
        self.services = services
        self.looked_at: OrderedDict[str, None] = OrderedDict()  # job ids already seen waiting long enough

    def round(self) -> int:
        """Show the animation to each message that has waited long enough and has not had it; how many."""
        services = self.services
        after_s = services.settings.loading_animation_after_ms / 1000
        ids = [i.decode() for i in services.redis.lrange(services.queue.key, 0, WINDOW - 1)]
        new = [i for i in ids if i not in self.looked_at]
        shown = 0
        now = time.time()
        for job in Job.fetch_many(new, connection=services.redis) if new else []:
            if job is None or job.enqueued_at is None:
                continue  # taken meanwhile
            if now - job.enqueued_at.timestamp() < after_s:
                continue  # look again next round
            self._remember(job.id)
            if job.func_name == "bot.jobs.handle_event" and self._claim(job.id) and self._show(*job.args):
                shown += 1
        return shown

    def _claim(self, job_id: str) -> bool:
        """One animation a message, however many boxes look."""
        return bool(self.services.redis.set(f"event:loading:{job_id}", 1, nx=True, ex=SHOWN_S))

    def _show(self, platform: str, raw_event: dict) -> bool:
        adapter = self.services.adapters.get(platform)
        incoming = adapter and adapter.parse(raw_event)
        if not incoming or incoming.kind != TEXT:
            return False
        adapter.show_loading(incoming, seconds=SHOWN_S)
        return True

    def _remember(self, job_id: str) -> None:
        self.looked_at[job_id] = None
        while len(self.looked_at) > _REMEMBERED:
            self.looked_at.popitem(last=False)
