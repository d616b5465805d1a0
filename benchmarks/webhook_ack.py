"""How fast does the webhook acknowledge LINE?  ``python -m benchmarks.webhook_ack``

Starts the web process as in production (gunicorn, config/gunicorn.conf.py)
against an embedded Redis, sends signed LINE text events over loopback, and
reports the acknowledgement time seen by the client (p50/p90/p99/max), for
one connection and for several in parallel.  Prints a table, writes JSON.
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

from bot.local_chat import line_event, sign
from bot.redis_conn import start_embedded, url_of
from config.settings import PROJECT_ROOT

SECRET = "benchmark-secret"


def signed_body(user: str) -> tuple[bytes, str]:
    event = line_event(user, "message", text="QRコードの登録はどうすればいいですか？", reply_token=uuid.uuid4().hex)
    body = json.dumps({"destination": "Ubench", "events": [event]}, ensure_ascii=False)
    return body.encode(), sign(body, SECRET)


def timed_posts(url: str, count: int) -> list[float]:
    """Milliseconds per request, one keep-alive connection, bodies signed beforehand."""
    bodies = [signed_body(f"Ubench{i % 50}") for i in range(count)]
    times = []
    with requests.Session() as session:
        for body, signature in bodies:
            started = time.perf_counter()
            response = session.post(url, data=body, headers={"X-Line-Signature": signature,
                                                             "Content-Type": "application/json"})
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
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "webhook_ack.json")
    args = parser.parse_args(argv)

    redis = start_embedded(str(Path(tempfile.mkdtemp()) / "bench.db"))
    env = {**os.environ, "BOT_MODE": "local", "LINE_CHANNEL_SECRET": SECRET, "REDIS_URL": url_of(redis),
           "PORT": str(args.port), "LOG_LEVEL": "WARNING"}
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                            "--access-logfile", "/dev/null", "bot.app:create_app()"], env=env, cwd=PROJECT_ROOT)
    url = f"http://127.0.0.1:{args.port}/callback"
    try:
        wait_for(f"http://127.0.0.1:{args.port}/healthz", web)
        timed_posts(url, 100)  # warm-up: imports, connection pools
        sequential = summary(timed_posts(url, args.requests))
        per_worker = args.requests // args.parallel
        with ThreadPoolExecutor(args.parallel) as pool:
            started = time.perf_counter()
            runs = list(pool.map(lambda _: timed_posts(url, per_worker), range(args.parallel)))
            elapsed = time.perf_counter() - started
        parallel = summary([t for run in runs for t in run])
        parallel["requests_per_s"] = parallel["requests"] / elapsed
        queued = redis.llen("rq:queue:events")
    finally:
        web.terminate()
        web.wait(timeout=10)
    report = {"sequential": sequential, f"parallel_{args.parallel}": parallel, "queued_jobs": queued,
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
