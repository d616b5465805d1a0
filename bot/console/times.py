"""Times as the city reads them: every time the console shows, filters on or counts by day is in ``TIMEZONE``
(a PaaS runs in UTC, and a 09:42 question in Japan is not a 00:42 one)."""
from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

from flask import current_app

from bot.console.blueprint import bp


def zone() -> ZoneInfo:
    return ZoneInfo(current_app.extensions["bot"].settings.timezone)


def moment(ms) -> datetime:
    """Epoch milliseconds as an aware datetime in the city's zone."""
    return datetime.fromtimestamp(int(ms) / 1000, zone())


@bp.app_template_filter("clock")
def clock(ms) -> str:
    """For pages: date and time in the city's zone."""
    return moment(ms).strftime("%Y-%m-%d %H:%M:%S") if ms else ""


def iso(ms) -> str:
    """For exports: with the zone's offset, so a spreadsheet elsewhere is not an hour or nine off."""
    return moment(ms).isoformat(timespec="seconds") if ms else ""


def today() -> date:
    return datetime.now(zone()).date()


def day_bounds_ms(first: date, last: date) -> tuple[int, int]:
    """From the first moment of ``first`` to the last of ``last``, in the city's zone, as epoch milliseconds."""
    start = datetime.combine(first, time.min, zone())
    end = datetime.combine(last, time.max, zone())
    return int(start.timestamp() * 1000), int(end.timestamp() * 1000)


@bp.app_context_processor
def _zone_name():
    return {"timezone": current_app.extensions["bot"].settings.timezone}
