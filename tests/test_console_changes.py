"""Console live updates: polled and answered at once, never a held connection; the access log keeps neither
query strings nor the polls."""
import logging
import runpy
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from gunicorn.config import Config

from bot.app import create_app
from bot.console.conversations import _CHANGES_PER_POLL
from config.settings import PROJECT_ROOT
from tests.conftest import line_event, post_events, sign_in


def test_new_turns_come_after_the_cursor_without_their_text(operator, worker):
    before = str(int(time.time() * 1000) - 1)
    post_events(operator, line_event(text="電話は090-1111-2222です", user="Uchanged"))
    worker.run()
    response = operator.get(f"/console/changes?after={before}")
    changed = response.get_json()
    assert {(turn["user"], turn["direction"]) for turn in changed["turns"]} == {("Uchanged", "in"), ("Uchanged", "out")}
    assert all(set(turn) <= {"platform", "user", "direction", "decision"} for turn in changed["turns"])
    assert "電話" not in response.get_data(as_text=True) and "1111-2222" not in response.get_data(as_text=True)

    post_events(operator, line_event(text="二つ目", user="Usecond"))
    worker.run()
    resumed = operator.get(f"/console/changes?after={changed['after']}").get_json()
    assert {turn["user"] for turn in resumed["turns"]} == {"Usecond"}


def test_with_nothing_new_the_answer_is_immediate_and_keeps_the_cursor(operator):
    started = time.perf_counter()
    changed = operator.get("/console/changes?after=1700000000000").get_json()
    assert changed == {"after": "1700000000000", "turns": []}
    assert time.perf_counter() - started < 0.5


def test_one_answer_carries_a_bounded_batch_and_the_next_one_the_rest(operator, worker):
    for i in range(_CHANGES_PER_POLL + 5):
        worker.convlog.append("line", f"U{i}", "in", "text", decision="answered")
    first = operator.get("/console/changes?after=0").get_json()
    rest = operator.get(f"/console/changes?after={first['after']}").get_json()
    assert (len(first["turns"]), len(rest["turns"])) == (_CHANGES_PER_POLL, 5)


@pytest.mark.parametrize("after", ["", "$", "0-0-0", "1e9"])
def test_a_malformed_cursor_is_refused(operator, after):
    assert operator.get(f"/console/changes?after={after}").status_code == 400


@pytest.fixture
def access_log(tmp_path, monkeypatch):
    """gunicorn's logger as config/gunicorn.conf.py sets it up, writing the access log to a file."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "metrics"))
    conf = runpy.run_path(str(PROJECT_ROOT / "config" / "gunicorn.conf.py"))
    cfg = Config()
    for name in ("access_log_format", "logger_class"):
        cfg.set(name, conf[name])
    cfg.set("accesslog", str(tmp_path / "access.log"))
    logger = cfg.logger_class(cfg)

    def request(method, uri, status="200 OK"):
        path, _, query = uri.partition("?")
        environ = {"REQUEST_METHOD": method, "RAW_URI": uri, "PATH_INFO": path, "QUERY_STRING": query,
                   "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.1", "HTTP_USER_AGENT": "Mozilla/5.0",
                   "HTTP_REFERER": "https://bot.example/console/conversations?q=粗大ごみ"}
        response = SimpleNamespace(status=status, sent=120, headers=[])
        logger.access(response, SimpleNamespace(headers=[]), environ, timedelta(milliseconds=3))
        return (tmp_path / "access.log").read_text(encoding="utf-8")

    yield request
    for handler in list(logging.getLogger("gunicorn.access").handlers):
        handler.close()
        logging.getLogger("gunicorn.access").removeHandler(handler)


def test_an_access_log_line_has_the_path_but_no_query_string_or_referrer(access_log):
    line = access_log("GET", "/console/conversations?q=粗大ごみ&partial=1")
    assert '"GET /console/conversations HTTP/1.1" 200' in line
    assert "粗大ごみ" not in line and "q=" not in line and "partial" not in line


def test_successful_polls_are_not_logged_but_a_signed_out_one_is(access_log):
    assert access_log("GET", "/console/changes?after=1700000000000-0") == ""
    assert '"GET /console/changes HTTP/1.1" 302' in access_log("GET", "/console/changes?after=0", status="302 FOUND")
    assert '"POST /callback HTTP/1.1" 200' in access_log("POST", "/callback")


@pytest.mark.parametrize("zone, offset", [("Asia/Tokyo", "+09:00"), ("America/New_York", "-05:00")])
def test_times_are_shown_filtered_counted_and_exported_in_the_citys_zone(settings, redis, zone, offset):
    from datetime import datetime, timedelta, timezone
    from zoneinfo import ZoneInfo

    from bot.convlog import GLOBAL_STREAM

    # 00:42 UTC on 2 December: 09:42 the same day in Tokyo, 19:42 the day before in New York
    when = datetime(2026, 12, 2, 0, 42, tzinfo=timezone.utc)
    ms = int(when.timestamp() * 1000)
    local = when.astimezone(ZoneInfo(zone))
    redis.hset("log:summary:line:Uzone", mapping={"last_ts": ms, "last_text": "asked then", "last_decision": "answered"})
    redis.zadd("log:recent", {"line:Uzone": ms})
    turn = {"ts": ms, "platform": "line", "user": "Uzone", "direction": "in", "text": "asked then",
            "decision": "answered", "faq_id": "visitor-register"}
    redis.xadd(GLOBAL_STREAM, turn, id=f"{ms}-0")  # as the log writes it, at that moment
    client = create_app(settings.replace(timezone=zone), redis=redis).test_client()
    sign_in(client)
    page = client.get(f"/console/conversations?date={local.date()}").get_data(as_text=True)
    assert local.strftime("%Y-%m-%d %H:%M:%S") in page  # the list's hover time, and the day it is filtered on
    csv = client.get("/console/conversations.csv").get_data(as_text=True)
    assert local.isoformat(timespec="seconds") in csv and offset in csv
    day = local.date()
    numbers = client.get(f"/console/dashboard.csv?from={day}&to={day}").get_data(as_text=True)
    assert f"messages {day},1" in numbers.replace("\r", "")
    before = day - timedelta(days=1) if zone == "Asia/Tokyo" else day + timedelta(days=1)
    assert f"messages {before},0" in client.get(f"/console/dashboard.csv?from={before}&to={before}").get_data(as_text=True).replace("\r", "")


def test_a_timezone_that_does_not_exist_stops_the_boot():
    from config.settings import Settings, SettingsError

    with pytest.raises(SettingsError, match="TIMEZONE"):
        Settings(mode="local", timezone="Asia/Atlantis").check()
