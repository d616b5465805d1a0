"""Does a killed worker lose or double a message?  ``python -m benchmarks.worker_kills [--messages 300]``

Runs the Procfile's processes as in production (gunicorn web, ``python -m
bot.worker``) against an embedded Redis and a fake LINE API on loopback,
queues the messages, and kills the worker with SIGKILL twice while it works
through them, starting a new one after each kill (once /healthz has noticed,
or at once as a PaaS restarts a crashed process).  Reports how
long /healthz took to notice each death, how long the next worker took to
answer the message the dead one held, and how many messages were lost or
answered twice.  Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from bot.local_chat import line_event
from bot.redis_conn import start_embedded, url_of
from benchmarks.report import write_json
from config.settings import PROJECT_ROOT
from tests.fake_apis import FakeLineApi
from tests.conftest import CHANNEL_SECRET
from tests.procfile import Process, free_port, post_line_event, status, wait_until

QUESTIONS = ("QRコードの登録はどうすればいいですか？", "What should I do after an alert?", "ポスターはどこで印刷できますか")


def answers_per_user(api: FakeLineApi, tokens: dict[str, str]) -> Counter:
    """Messages each resident received, by reply token or by push address."""
    return Counter(tokens.get(r.body.get("replyToken")) or r.body.get("to") for r in api.sent())


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--max-age", type=int, default=60, help="WORKER_HEARTBEAT_MAX_AGE_SECONDS")
    parser.add_argument("--restart-at-once", action="store_true",
                        help="start the next worker right after a kill, as a PaaS restarts a crashed process "
                             "(default: only once /healthz has noticed, which measures that)")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "worker_kills.json")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="worker-kills-"))
    redis, api = start_embedded(str(folder / "redis.db")), FakeLineApi()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if k != "BOT_MODE"}, "LINE_CHANNEL_SECRET": CHANNEL_SECRET,
           "LINE_CHANNEL_ACCESS_TOKEN": "bench-token", "REDIS_URL": url_of(redis), "LINE_API_BASE_URL": api.url,
           "PORT": str(port), "WORKER_HEARTBEAT_MAX_AGE_SECONDS": str(args.max_age), "LOG_LEVEL": "WARNING",
           "PROMETHEUS_MULTIPROC_DIR": str(folder / "metrics")}
    processes = [Process("web", env, folder), Process("worker", env, folder)]
    try:
        boot = wait_until(lambda: status(base + "/healthz") == 200, 300, "the first worker is up")
        print(f"first worker up after {boot:.1f} s; queueing {args.messages} messages")
        users = [f"Ukill{n:04d}" for n in range(args.messages)]
        tokens, statuses = {}, Counter()
        for n, user in enumerate(users):
            event = line_event(user, "message", text=QUESTIONS[n % len(QUESTIONS)])
            tokens[event["replyToken"]] = user
            statuses[post_line_event(base, event).status_code] += 1
        started, kills = time.monotonic(), []
        for _ in range(args.kills):
            answered_before = len(api.sent())
            wait_until(lambda: redis.zcard("rq:wip:events") == 1, 120, "the worker holds a job")
            processes[-1].stop(sig=9)
            stranded = [entry.decode().split(":")[0] for entry in redis.zrange("rq:wip:events", 0, -1)]
            noticed = None if args.restart_at_once else wait_until(
                lambda: status(base + "/healthz") == 503, args.max_age + 60, "/healthz notices")
            processes.append(Process("worker", env, folder))
            up = wait_until(lambda: status(base + "/healthz") == 200, 300, "the next worker is up")
            # a finished job leaves nothing behind (result_ttl=0): done once its record is gone or finished
            back = wait_until(lambda: all(redis.hget(f"rq:job:{job}", "status") in (None, b"finished")
                                          for job in stranded),
                              120, "the stranded jobs are done")
            kills.append({"answered_before_kill": answered_before, "stranded_jobs": len(stranded),
                          "noticed_s": noticed and round(noticed, 1), "next_worker_up_s": round(up, 1),
                          "stranded_done_after_up_s": round(back, 1)})
            print(f"kill {len(kills)}: {len(stranded)} job stranded; /healthz 503 after "
                  f"{'-' if noticed is None else f'{noticed:.1f}'} s; next worker up after {up:.1f} s; "
                  f"stranded jobs answered {back:.1f} s after that")
        wait_until(lambda: len(api.sent()) >= args.messages, 600, "every message is answered")
        time.sleep(3)  # anything sent twice would arrive now
        per_user = answers_per_user(api, tokens)
        report = {"messages": args.messages, "acknowledged": statuses[200], "kills": kills,
                  "lost": sum(1 for user in users if per_user[user] == 0),
                  "doubled": sum(1 for user in users if per_user[user] > 1),
                  "by_reply": len(api.sent("/reply")), "by_push": len(api.sent("/push")),
                  "seconds_to_answer_all": round(time.monotonic() - started, 1),
                  "worker_heartbeat_max_age_s": args.max_age, "restart_at_once": args.restart_at_once}
    finally:
        for process in processes:
            process.stop(sig=9)
        api.close()
    print(f"\n{'messages':>8} {'acked':>6} {'lost':>5} {'doubled':>7} {'reply':>6} {'push':>5} {'all answered':>12}")
    print(f"{report['messages']:>8} {report['acknowledged']:>6} {report['lost']:>5} {report['doubled']:>7} "
          f"{report['by_reply']:>6} {report['by_push']:>5} {report['seconds_to_answer_all']:>11} s")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
