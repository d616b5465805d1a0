"""How fast do the webhooks acknowledge?  ``python -m benchmarks.webhook_ack [--platform slack]
[--console-pages 0,12] [--rate 500 --seconds 10]``

Starts the web process as in production (gunicorn, config/gunicorn.conf.py)
against an embedded Redis, sends signed LINE (or Slack) text events over
loopback, and reports the acknowledgement time seen by the client
(p50/p90/p99/max), for one connection and for several in parallel; with
``--rate``, also at a fixed rate, open loop, as a platform sends in a crisis;
with ``--console-pages N``, while N signed-in console pages poll for live
updates as open browser tabs do.  Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import requests

from slack_sdk.signature import SignatureVerifier
from werkzeug.security import generate_password_hash

from bot.local_chat import line_event, sign, slack_request
from bot.redis_conn import start_embedded, url_of
from benchmarks.report import write_json
from config.settings import PROJECT_ROOT

SECRET = "benchmark-secret"
OPERATOR, OPERATOR_PASSWORD = "bench", "benchmark-operator-password"
POLL_INTERVAL_S = 2.0  # as the console pages wait between polls


QUESTION = "QRコードの登録はどうすればいいですか？"


def signed_line(user: str) -> tuple[bytes, dict]:
    event = line_event(user, "message", text=QUESTION, reply_token=uuid.uuid4().hex)
    body = json.dumps({"destination": "Ubench", "events": [event]}, ensure_ascii=False)
    return body.encode(), {"X-Line-Signature": sign(body, SECRET), "Content-Type": "application/json"}


def signed_slack(user: str) -> tuple[bytes, dict]:
    _, body = slack_request(user, "message", text=QUESTION)
    timestamp = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=timestamp, body=body)
    return body.encode(), {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature,
                           "Content-Type": "application/json"}


PLATFORMS = {"line": ("/callback", signed_line), "slack": ("/slack/events", signed_slack)}


def timed_posts(url: str, count: int, build) -> list[float]:
    """Milliseconds per request, one keep-alive connection, bodies signed beforehand."""
    bodies = [build(f"Ubench{i % 50}") for i in range(count)]
    times = []
    with requests.Session() as session:
        for body, headers in bodies:
            started = time.perf_counter()
            response = session.post(url, data=body, headers=headers)
            times.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                raise SystemExit(f"webhook answered {response.status_code}: {response.text}")
    return times


def open_loop(count: int, due, send, connections: int) -> float:
    """``send(session, i, when)`` for each i < ``count`` at ``when`` = the start + ``due(i)`` seconds
    (``time.perf_counter``), on ``connections`` keep-alive connections, whatever the answers before it took (as a
    platform sends); returns the start."""
    claimed, lock = iter(range(count)), threading.Lock()
    start = time.perf_counter() + 0.2

    def connection():
        with requests.Session() as session:
            while True:
                with lock:
                    i = next(claimed, None)
                if i is None:
                    return
                when = start + due(i)
                time.sleep(max(0.0, when - time.perf_counter()))
                send(session, i, when)

    threads = [threading.Thread(target=connection) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return start


def at_rate(url: str, build, rate: float, seconds: float, connections: int = 32) -> dict:
    """Open loop: request i is due at ``i / rate`` seconds, and its time counts from when it was due, so a slow
    answer also delays those queued behind it."""
    count = int(rate * seconds)
    bodies = [build(f"Ubench{i % 50}") for i in range(count)]
    times, statuses = [], []

    def send(session, i, when):
        body, headers = bodies[i]
        statuses.append(session.post(url, data=body, headers=headers).status_code)
        times.append((time.perf_counter() - when) * 1000)

    start = open_loop(count, lambda i: i / rate, send, connections)
    if any(status != 200 for status in statuses):
        raise SystemExit(f"webhook answered {sorted(set(statuses))}")
    return {**summary(times), "rate_per_s": rate, "achieved_per_s": count / (time.perf_counter() - start)}


def summary(times: list[float]) -> dict:
    return {
        "requests": len(times),
        "p50_ms": statistics.median(times),
        "p90_ms": float(np.percentile(times, 90)),
        "p99_ms": float(np.percentile(times, 99)),
        "max_ms": max(times),
    }


def signed_in_console(base: str) -> requests.Session:
    """An operator's browser session: signed in through the login form, CSRF token included."""
    session = requests.Session()
    token = re.search(r'name="csrf_token" value="([^"]+)"', session.get(f"{base}/console/login").text).group(1)
    answer = session.post(f"{base}/console/login", allow_redirects=False,
                          data={"name": OPERATOR, "password": OPERATOR_PASSWORD, "csrf_token": token})
    if answer.status_code != 302:
        raise SystemExit(f"console sign-in answered {answer.status_code}")
    return session


def poll_changes(base: str, session: requests.Session, stop: threading.Event, polls: list) -> None:
    """One open console page: ask for changes, wait the page's interval after each answer, until stopped."""
    after = str(int(time.time() * 1000))
    while not stop.is_set():
        started = time.perf_counter()
        answer = session.get(f"{base}/console/changes", params={"after": after}, allow_redirects=False)
        polls.append(((time.perf_counter() - started) * 1000, answer.status_code))
        if answer.status_code == 200:
            after = answer.json()["after"]
        stop.wait(POLL_INTERVAL_S)


@contextmanager
def console_pages(base: str, count: int):
    """``count`` console pages polling in background threads; yields their (ms, status) per poll."""
    sessions = [signed_in_console(base) for _ in range(count)]
    stop, polls = threading.Event(), []
    threads = [threading.Thread(target=poll_changes, args=(base, session, stop, polls)) for session in sessions]
    for thread in threads:
        thread.start()
    try:
        yield polls
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def measure(url: str, build, requests_count: int, parallel: int) -> dict:
    """Acknowledgement times on one connection, then on ``parallel`` connections at once."""
    sequential = summary(timed_posts(url, requests_count, build))
    per_worker = requests_count // parallel
    with ThreadPoolExecutor(parallel) as pool:
        started = time.perf_counter()
        runs = list(pool.map(lambda _: timed_posts(url, per_worker, build), range(parallel)))
        elapsed = time.perf_counter() - started
    in_parallel = summary([t for run in runs for t in run])
    in_parallel["requests_per_s"] = in_parallel["requests"] / elapsed
    return {"sequential": sequential, f"parallel_{parallel}": in_parallel}


def wait_for(url: str, process, timeout_s: float = 30) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and process.poll() is None:
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit("the web process did not start")


@contextmanager
def web_process(env: dict, base: str):
    """The web process as in production, fresh for each run so that no run inherits the previous one's state."""
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                            "--access-logfile", "/dev/null", "bot.app:create_app()"], env=env, cwd=PROJECT_ROOT)
    try:
        wait_for(f"{base}/healthz", web)
        yield
    finally:
        web.terminate()
        web.wait(timeout=10)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--parallel", type=int, default=8, help="connections in the parallel run")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--platform", choices=sorted(PLATFORMS), default="line")
    parser.add_argument("--console-pages", type=lambda text: [int(n) for n in text.split(",")], default=[0],
                        help="console pages polling during the run; comma-separated for one run each (0,12)")
    parser.add_argument("--rate", type=float, default=0,
                        help="also send at this fixed rate (requests/s) for --seconds, open loop, as a platform does")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/webhook_ack_<platform>.json")
    args = parser.parse_args(argv)
    path, build = PLATFORMS[args.platform]
    args.json = args.json or PROJECT_ROOT / "benchmarks" / "results" / f"webhook_ack_{args.platform}.json"

    redis = start_embedded(str(Path(tempfile.mkdtemp()) / "bench.db"))
    env = {**os.environ, "BOT_MODE": "local", "LINE_CHANNEL_SECRET": SECRET, "SLACK_SIGNING_SECRET": SECRET,
           "REDIS_URL": url_of(redis), "CONSOLE_OPERATORS": f"{OPERATOR}:{generate_password_hash(OPERATOR_PASSWORD)}",
           "SECRET_KEY": "benchmark-session-key", "PORT": str(args.port), "LOG_LEVEL": "WARNING"}
    base = f"http://127.0.0.1:{args.port}"
    runs = []
    for pages in args.console_pages:
        with web_process(env, base):
            timed_posts(base + path, 100, build)  # warm-up: imports, connection pools
            with console_pages(base, pages) as polls:
                run = {"console_pages": pages, **measure(base + path, build, args.requests, args.parallel)}
                if args.rate:
                    run[f"at_{args.rate:g}_per_s"] = at_rate(base + path, build, args.rate, args.seconds)
        if any(status != 200 for _, status in polls):
            raise SystemExit(f"console polls failed: {sorted({status for _, status in polls})}")
        run["console_polls"] = summary([ms for ms, _ in polls]) if polls else {"requests": 0}
        runs.append(run)
    queued = redis.llen("rq:queue:events")
    report = {"platform": args.platform, "runs": runs, "queued_jobs": queued,
              "web": "gunicorn gthread, WEB_CONCURRENCY=%s" % os.environ.get("WEB_CONCURRENCY", "2"),
              "cpu_count": os.cpu_count()}
    print(f"\n{'pages':>5} {'run':<14} {'requests':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for run in runs:
        for name in ("sequential", f"parallel_{args.parallel}", f"at_{args.rate:g}_per_s", "console_polls"):
            row = run.get(name, {"requests": 0})
            if row["requests"]:
                print(f"{run['console_pages']:>5} {name:<14} {row['requests']:>8} {row['p50_ms']:>7.2f} "
                      f"{row['p90_ms']:>7.2f} {row['p99_ms']:>7.2f} {row['max_ms']:>7.2f}")
        print(f"{run['console_pages']:>5} parallel throughput {run[f'parallel_{args.parallel}']['requests_per_s']:.0f} "
              "requests/s")
    print(f"\n{queued} jobs queued\n")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
