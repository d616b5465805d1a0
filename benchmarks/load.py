"""Crisis load: how many questions a second does one box answer, how fast, and exactly once?
``python -m benchmarks.load [--rate 40] [--seconds 60] [--redelivered 0.1] [--groups N] [--venv DIR]``

Starts the Procfile's processes as in production (gunicorn web, ``python -m
bot.worker`` with the shipped encoders) against a real redis-server (AOF) and
a fake LINE API on loopback, then posts signed message events at a fixed rate,
open loop as LINE sends them, each from a resident of its own; a share of them
is delivered again a second later, as LINE redelivers.  ``--groups N`` starts N
workers, each pinned to its own core (``taskset``), as N one-core boxes
sharing one Redis (the web process, Redis and the sender still share the
cores with them).  Reports answered per second, webhook-to-reply p50/p95/p99, the share
answered by reply (free) rather than push (counted against the account's
quota), lost and doubled answers, outbound calls and Redis commands per
message, what each message leaves in Redis, and each process's memory before
and after.  Prints a table, writes JSON and a PNG of the wait over time.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import redis as redis_client

from benchmarks.faults import TimedLineApi
from benchmarks.report import write_json
from benchmarks.webhook_ack import open_loop
from benchmarks.worker_kills import QUESTIONS
from bot.local_chat import line_event, sign
from config.settings import PROJECT_ROOT
from tests.conftest import CHANNEL_SECRET
from tests.procfile import Process, RedisServer, production_env, status, wait_until

RESULTS = PROJECT_ROOT / "benchmarks" / "results"


def group_memory(pid: int) -> dict:
    """A process and its children (gunicorn's workers, the worker's forked processes): their resident memory
    added up, and their proportional share (PSS: a page shared by three counts a third in each), in MB."""
    pids = [pid, *map(int, subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split())]
    total = Counter()
    for each in pids:
        try:
            with open(f"/proc/{each}/smaps_rollup") as rollup:
                for line in rollup:
                    if line.startswith(("Rss:", "Pss:")):
                        total[line.split(":")[0].lower()] += int(line.split()[1]) / 1024
        except FileNotFoundError:  # exited meanwhile
            continue
    return {"processes": len(pids), "rss_mb": round(total["rss"]), "pss_mb": round(total["pss"])}


def redis_numbers(client) -> dict:
    """Memory, keys, and the commands run so far by name."""
    commands = {name.removeprefix("cmdstat_"): stats["calls"] for name, stats in client.info("commandstats").items()}
    return {"used_memory": client.info("memory")["used_memory"], "keys": client.dbsize(), "commands": commands}


#: Kinds whose total is capped however many messages come (``LOG_GLOBAL_MAXLEN`` entries, the unanswered queue's
#: 5,000 questions, one reply per distinct text): in steady state a message adds nothing to them.
CAPPED = ("log:all", "unanswered:items", "unanswered:order", "log:reply")


def keys_by_kind(client, sample: int = 2000) -> dict:
    """Each kind of key (its name up to the first id): how many, and their bytes estimated from a sample."""
    kinds: dict[str, list] = {}
    for key in client.scan_iter(count=1000):
        name = key.decode(errors="replace")
        kind = ":".join(part for part in name.split(":")[:3] if not any(ch.isdigit() for ch in part)) or name
        kinds.setdefault(kind, []).append(key)
    report = {}
    for kind, keys in sorted(kinds.items(), key=lambda item: -len(item[1])):
        measured = [client.memory_usage(key) or 0 for key in keys[:sample]]
        ttl = client.ttl(keys[0])
        report[kind] = {"keys": len(keys), "bytes": round(np.mean(measured) * len(keys)) if measured else 0,
                        "expires": ttl >= 0}
    return report


def post_at_rate(url: str, events: list[dict], rate: float, redelivered: float, connections: int) -> dict:
    """Post ``events`` open loop at ``rate`` a second (a share of them again 1 s later, marked as redeliveries);
    each event's post time by its webhook event id, the webhook's answer times and statuses."""
    rng = np.random.default_rng(7)
    schedule = [(i / rate, event) for i, event in enumerate(events)]
    for due, event in list(schedule):
        if rng.random() < redelivered:
            again = {**event, "deliveryContext": {"isRedelivery": True}}  # its timestamp: the first's, when posted
            schedule.append((due + 1.0, again))
    schedule.sort(key=lambda item: item[0])
    posted, acks, statuses, lock = {}, [], Counter(), threading.Lock()

    def send(session, i, when):
        event = schedule[i][1]
        if not event["deliveryContext"]["isRedelivery"]:
            event["timestamp"] = int(time.time() * 1000)  # when the resident sent it; a redelivery keeps it
        body = json.dumps({"destination": "Uload", "events": [event]}, ensure_ascii=False)
        sent = time.time()
        response = session.post(url + "/callback", data=body.encode(), timeout=30, headers={
            "X-Line-Signature": sign(body, CHANNEL_SECRET), "Content-Type": "application/json"})
        with lock:
            posted.setdefault(event["webhookEventId"], sent)
            acks.append((time.perf_counter() - when) * 1000)
            statuses[response.status_code] += 1

    open_loop(len(schedule), lambda i: schedule[i][0], send, connections)
    return {"posted": posted, "ack_ms": acks, "statuses": statuses}


def sample_queue(client, stop: threading.Event, samples: list) -> None:
    """The waiting messages every half second, for the picture."""
    while not stop.wait(0.5):
        try:
            samples.append((time.time(), client.llen("rq:queue:events")))
        except redis_client.RedisError:
            pass


def percentiles(values) -> dict:
    if not values:
        return {}
    return {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 95, 99)} | {"max": round(max(values), 3)}


def plot(path: Path, rows: list[tuple[float, float, str]], queue: list, started: float, title: str) -> None:
    """Webhook-to-reply seconds of each message by when it was posted, and the queue's depth beside it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for kind, colour in (("reply", "tab:blue"), ("push", "tab:red")):
        points = [(t - started, wait) for t, wait, how in rows if how == kind]
        if points:
            ax.scatter(*zip(*points), s=4, color=colour, label=f"answered by {kind}")
    ax.set_xlabel("seconds since the first post")
    ax.set_ylabel("webhook to answer, s")
    ax.set_title(title)
    if queue:
        depth = ax.twinx()
        depth.plot([t - started for t, _ in queue], [n for _, n in queue], color="grey", linewidth=1,
                   label="messages waiting")
        depth.set_ylabel("messages waiting")
        depth.legend(loc="upper right")
    ax.legend(loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def where(groups: int) -> str:
    return f"{groups} worker(s) pinned to a core each" if groups else "one worker on the whole box"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=40, help="messages a second")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--redelivered", type=float, default=0.1, help="share of events LINE delivers twice")
    parser.add_argument("--groups", type=int, default=0,
                        help="workers, each pinned to its own core, as boxes sharing one Redis (default 0: one "
                             "worker on the whole box, unpinned)")
    parser.add_argument("--worker-processes", default="", help="WORKER_PROCESSES (default: one per core)")
    parser.add_argument("--warm-up", type=int, default=200,
                        help="messages answered before measuring, so memory growth is the run's, not the first jobs'")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--venv", type=Path, default=None, help="run the processes from this virtual environment")
    parser.add_argument("--json", type=Path, default=RESULTS / "load.json")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="load-"))
    api, server = TimedLineApi(), RedisServer(folder / "aof")
    server.start()
    client = redis_client.Redis.from_url(server.url)
    env = {**production_env(server.url, api.url, folder), "LOG_LEVEL": "WARNING"}
    env.pop("NLU_TUNED_ENCODER")  # the shipped encoders, as a deployer runs it
    if args.worker_processes:
        env["WORKER_PROCESSES"] = args.worker_processes
    bin_dir = args.venv / "bin" if args.venv else None
    base = f"http://127.0.0.1:{env['PORT']}"
    cores = sorted(os.sched_getaffinity(0))
    processes = {"web": Process("web", env, folder, bin_dir)}
    for n in range(max(args.groups, 1)):
        cpus = str(cores[n % len(cores)]) if args.groups else ""
        processes[f"worker{n + 1}"] = Process("worker", env, folder, bin_dir, cpus=cpus)
    stop, queue = threading.Event(), []
    try:
        boot = wait_until(lambda: status(base + "/healthz") == 200
                          and client.zcard("workers:beats") >= max(args.groups, 1), 300, "the bot is up")
        if args.warm_up:
            warm = [line_event(f"Uwarm{n:06d}", "message", text=QUESTIONS[n % len(QUESTIONS)]) for n in range(args.warm_up)]
            post_at_rate(base, warm, args.rate, 0, args.connections)
            wait_until(lambda: len(api.accepted) >= args.warm_up, 120, "the warm-up is answered")
            api.reset()
        time.sleep(2)
        memory_before = {name: group_memory(p.popen.pid) for name, p in processes.items()}
        redis_before = redis_numbers(client)
        count = int(args.rate * args.seconds)
        events = [line_event(f"Uload{n:06d}", "message", text=QUESTIONS[n % len(QUESTIONS)]) for n in range(count)]
        tokens = {event["replyToken"]: event["webhookEventId"] for event in events}
        users = {event["source"]["userId"]: event["webhookEventId"] for event in events}
        print(f"up after {boot:.1f} s; posting {count} messages at {args.rate:g}/s "
              f"({args.redelivered:.0%} delivered twice), {where(args.groups)}")
        threading.Thread(target=sample_queue, args=(client, stop, queue), daemon=True).start()
        sent = post_at_rate(base, events, args.rate, args.redelivered, args.connections)
        posting_s = time.time() - min(sent["posted"].values())
        try:
            wait_until(lambda: len({a for a, _ in api.accepted}) >= count, 600, "every message is answered")
        except AssertionError:
            pass
        time.sleep(3)  # anything sent twice arrives now
        stop.set()
        memory_after = {name: group_memory(p.popen.pid) for name, p in processes.items()}
        redis_after = redis_numbers(client)
        kinds = keys_by_kind(client)

        answers: dict[str, list] = {}
        for request in api.requests:
            if request.status == 200 and "/v2/bot/message/" in request.path:
                event_id = tokens.get(request.body.get("replyToken")) or users.get(request.body.get("to"))
                answers.setdefault(event_id, []).append("reply" if request.path.endswith("/reply") else "push")
        accepted_at = {}
        for address, when in api.accepted:
            event_id = tokens.get(address) or users.get(address)
            accepted_at.setdefault(event_id, when)
        rows = [(sent["posted"][e], accepted_at[e] - sent["posted"][e], answers[e][0])
                for e in accepted_at if e in sent["posted"]]
        waits = [wait for _, wait, _ in rows]
        first_post = min(sent["posted"].values())
        last_answer = max(accepted_at.values()) if accepted_at else first_post
        calls = Counter(r.path.rsplit("/", 1)[-1] for r in api.requests)
        report = {
            "rate_per_s": args.rate, "seconds": args.seconds, "messages": count, "groups": args.groups,
            "worker_processes": args.worker_processes or "one per core",
            "posted_with_redeliveries": sum(sent["statuses"].values()),
            "webhook_statuses": dict(sent["statuses"]), "webhook_ack_ms": percentiles(sent["ack_ms"]),
            "posting_s": round(posting_s, 1),
            "answered": len(accepted_at), "answered_per_s": round(len(accepted_at) / (last_answer - first_post), 1),
            "lost": count - len(accepted_at), "doubled": sum(1 for a in answers.values() if len(a) > 1),
            "by_reply": round(sum(1 for a in answers.values() if a[0] == "reply") / max(len(answers), 1), 4),
            "webhook_to_answer_s": percentiles(waits),
            "outbound_calls_per_message": {name: round(n / count, 2) for name, n in calls.items()},
            "redis_commands_per_message": {name: round((n - redis_before["commands"].get(name, 0)) / count, 1)
                                           for name, n in sorted(redis_after["commands"].items(), key=lambda kv: -kv[1])
                                           if n - redis_before["commands"].get(name, 0) >= count / 10},
            "redis_keys_by_kind": kinds,
            "redis_bytes_per_message": round((redis_after["used_memory"] - redis_before["used_memory"]) / count),
            "redis_capped_bytes_per_message": round(sum(kinds[k]["bytes"] for k in CAPPED if k in kinds)
                                                    / (count + args.warm_up)),
            "redis_keys_per_message": round((redis_after["keys"] - redis_before["keys"]) / count, 2),
            "redis_used_mb_after": round(redis_after["used_memory"] / 2**20, 1),
            "memory_before": memory_before, "memory_after": memory_after,
        }
    finally:
        stop.set()
        for process in processes.values():
            process.stop(sig=9)
        server.stop()
        api.close()

    wait = report["webhook_to_answer_s"]
    print(f"\n{'messages':<34}{count} at {args.rate:g}/s for {args.seconds:g} s "
          f"({report['posted_with_redeliveries']} posts with redeliveries)")
    print(f"{'answered / lost / doubled':<34}{report['answered']} / {report['lost']} / {report['doubled']}")
    print(f"{'answered per second':<34}{report['answered_per_s']}")
    print(f"{'webhook to answer p50/p95/p99 s':<34}{wait.get('p50')} / {wait.get('p95')} / {wait.get('p99')}")
    print(f"{'answered by reply':<34}{report['by_reply']:.1%}")
    ack = report["webhook_ack_ms"]
    print(f"{'webhook ack p50/p99 ms':<34}{ack['p50']} / {ack['p99']}  {report['webhook_statuses']}")
    print(f"{'outbound calls per message':<34}{report['outbound_calls_per_message']}")
    commands = report["redis_commands_per_message"]
    print(f"{'Redis per message':<34}{sum(commands.values()):.0f} commands, "
          f"{report['redis_bytes_per_message']} bytes, {report['redis_keys_per_message']} keys "
          f"({report['redis_used_mb_after']} MB used)")
    capped = report["redis_capped_bytes_per_message"]
    print(f"{'  until they expire / capped':<34}{report['redis_bytes_per_message'] - capped} bytes / {capped} bytes "
          f"(in kinds whose total is capped: {', '.join(CAPPED)})")
    print(f"{'  commands':<34}{', '.join(f'{name} {n:g}' for name, n in commands.items())}")
    print(f"{'  keys left, by kind':<34}" + ", ".join(
        f"{kind} {v['keys']} ({v['bytes'] // 1024} KB{'' if v['expires'] else ', no expiry'})"
        for kind, v in kinds.items()))
    for name in processes:
        before, after = memory_before[name], memory_after[name]
        print(f"{name + ' memory (PSS, RSS) MB':<34}{before['pss_mb']}, {before['rss_mb']} -> "
              f"{after['pss_mb']}, {after['rss_mb']} ({after['processes']} processes)")
    write_json(args.json, report)
    plot(args.json.with_suffix(".png"), rows, queue, first_post,
         f"{count} messages at {args.rate:g}/s, {where(args.groups)}: p99 {wait.get('p99')} s")


if __name__ == "__main__":
    main()
