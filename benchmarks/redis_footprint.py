"""What does each message leave in Redis?  ``python -m benchmarks.redis_footprint [--messages 500]``

A PaaS Redis plan is sized in megabytes, and a crisis sends thousands of
messages.  This runs the webhook and the worker in one process against a fresh
embedded Redis and a fake LINE API (tests.fake_apis), from 50 residents,
warms up with 100 messages, then measures what ``--messages`` more add: bytes
(``used_memory``) and keys per message, and the bytes held by each kind of key.
Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

from rq import SimpleWorker

from bot.app import create_app
from bot.local_chat import line_event, sign
from bot.redis_conn import start_embedded, url_of
from bot.worker import build_worker_services
from benchmarks.report import write_json
from config.settings import PROJECT_ROOT, Settings
from nlu import build_nlu
from tests.fake_apis import FakeLineApi

SECRET = "footprint-secret"
QUESTIONS = ("QRコードの登録はどうすればいいですか？", "How do I stop getting the e-mails?", "明日の天気は？")


def key_kind(key: str) -> str:
    """``event:sent:line:<id>`` -> ``event:sent``, ``rq:job:<id>`` -> ``rq:job``."""
    return ":".join(key.split(":")[:2])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "redis_footprint.json")
    args = parser.parse_args(argv)
    api, redis = FakeLineApi(), start_embedded(str(Path(tempfile.mkdtemp()) / "footprint.db"))
    settings = Settings(mode="local", line_channel_secret=SECRET, line_channel_access_token="t",
                        line_api_base_url=api.url, redis_url=url_of(redis), loading_animation_after_ms=60_000)
    web = create_app(settings, redis=redis).test_client()
    worker = build_worker_services(settings, redis=redis, nlu=build_nlu(Settings.nlu_from_env()))

    def send(count: int, first: int) -> None:
        for n in range(first, first + count):
            event = line_event(f"Ufootprint{n % 50}", "message", text=QUESTIONS[n % len(QUESTIONS)])
            body = json.dumps({"destination": "Ubench", "events": [event]}, ensure_ascii=False)
            web.post("/callback", data=body.encode(), headers={"X-Line-Signature": sign(body, SECRET),
                                                               "Content-Type": "application/json"})
        SimpleWorker([worker.queue], connection=redis).work(burst=True)

    try:
        send(100, 0)
        before_bytes, before_keys = redis.info("memory")["used_memory"], redis.dbsize()
        send(args.messages, 100)
        added_bytes, added_keys = redis.info("memory")["used_memory"] - before_bytes, redis.dbsize() - before_keys
        held = Counter()
        for key in redis.scan_iter(count=1000):
            held[key_kind(key.decode())] += redis.memory_usage(key) or 0
        report = {"messages": args.messages, "bytes_per_message": round(added_bytes / args.messages),
                  "keys_per_message": round(added_keys / args.messages, 2),
                  "bytes_by_kind": dict(held.most_common()), "answered": len(api.sent())}
    finally:
        api.close()
        redis.shutdown()
    print(f"\n{report['bytes_per_message']} bytes and {report['keys_per_message']} keys a message "
          f"({args.messages} messages after 100 to warm up)\n")
    print(f"{'kind of key':<24} {'bytes held':>12}")
    for kind, size in report["bytes_by_kind"].items():
        print(f"{kind:<24} {size:>12}")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
