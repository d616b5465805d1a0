"""How fast do the webhooks acknowledge?  ``python -m benchmarks.webhook_ack [--platform slack]``

Starts the web process as in production (gunicorn, config/gunicorn.conf.py)
against an embedded Redis, sends signed LINE (or Slack) text events over
loopback, and reports the acknowledgement time seen by the client
(p50/p90/p99/max), for one connection and for several in parallel.  Prints a
table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from slack_sdk.signature import SignatureVerifier

from bot.local_chat import line_event, sign, slack_request
from bot.redis_conn import start_embedded, url_of
from config.settings import PROJECT_ROOT

SECRET = "benchmark-secret"


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


def summary(times: list[float]) -> dict:
    return {
        "requests": len(times),
        "p50_ms": statistics.median(times),
        "p90_ms": float(np.percentile(times, 90)),
        "p99_ms": float(np.percentile(times, 99)),
        "max_ms": max(times),
    }


def wait_for(url: str, process, timeout_s: float = 30) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline and process.poll() is None:
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit("the web process did not start")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--parallel", type=int, default=8, help="connections in the parallel run")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--platform", choices=sorted(PLATFORMS), default="line")
    parser.add_argument("--json", type=Path, help="default: benchmarks/results/webhook_ack_<platform>.json")
    args = parser.parse_args(argv)
    path, build = PLATFORMS[args.platform]
    args.json = args.json or PROJECT_ROOT / "benchmarks" / "results" / f"webhook_ack_{args.platform}.json"

    redis = start_embedded(str(Path(tempfile.mkdtemp()) / "bench.db"))
    env = {**os.environ, "BOT_MODE": "local", "LINE_CHANNEL_SECRET": SECRET, "SLACK_SIGNING_SECRET": SECRET,
           "REDIS_URL": url_of(redis),
           "PORT": str(args.port), "LOG_LEVEL": "WARNING"}
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                            "--access-logfile", "/dev/null", "bot.app:create_app()"], env=env, cwd=PROJECT_ROOT)
    url = f"http://127.0.0.1:{args.port}{path}"
    try:
        wait_for(f"http://127.0.0.1:{args.port}/healthz", web)
        timed_posts(url, 100, build)  # warm-up: imports, connection pools
        sequential = summary(timed_posts(url, args.requests, build))
        per_worker = args.requests // args.parallel
        with ThreadPoolExecutor(args.parallel) as pool:
            started = time.perf_counter()
            runs = list(pool.map(lambda _: timed_posts(url, per_worker, build), range(args.parallel)))
            elapsed = time.perf_counter() - started
        parallel = summary([t for run in runs for t in run])
        parallel["requests_per_s"] = parallel["requests"] / elapsed
        queued = redis.llen("rq:queue:events")
    finally:
        web.terminate()
        web.wait(timeout=10)
    report = {"platform": args.platform, "sequential": sequential, f"parallel_{args.parallel}": parallel, "queued_jobs": queued,
              "web": "gunicorn gthread, WEB_CONCURRENCY=%s" % os.environ.get("WEB_CONCURRENCY", "2"),
              "cpu_count": os.cpu_count()}
    print(f"\n{'run':<14} {'requests':>8} {'p50 ms':>7} {'p90 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for name in ("sequential", f"parallel_{args.parallel}"):
        row = report[name]
        print(f"{name:<14} {row['requests']:>8} {row['p50_ms']:>7.2f} {row['p90_ms']:>7.2f} "
              f"{row['p99_ms']:>7.2f} {row['max_ms']:>7.2f}")
    print(f"\nparallel throughput {parallel['requests_per_s']:.0f} requests/s; {queued} jobs queued\n")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
