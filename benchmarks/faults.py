"""Are answers lost, doubled or late under faults?  ``python -m benchmarks.faults [--fault NAME ...] [--rounds 10]
[--messages 200] [--retry-intervals 2,5,15,30,60,120,300,600]``

Runs the Procfile's processes as in production (gunicorn web, ``python -m
bot.worker``), fresh for each fault, against a real redis-server with AOF and
a fake LINE API on loopback, and injects one fault per round:

- worker-killed-mid-send: the worker is killed (SIGKILL) while LINE takes its
  reply, and a new one started at once, as a PaaS restarts a crashed process;
- redis-lost-mid-send: redis-server is killed while LINE takes the reply, and
  back 5 s later;
- redis-blip-before-retry: the first send fails (500), and Redis is stopped
  for 3 s while its retry waits;
- flaky-api: 40 % of LINE's message calls fail (503), for many residents at once.

Counts, per message (one resident each), whether it was answered once,
answered twice or more, given up where operators see it (undelivered or
unconfirmed in the conversation log), lost (no answer and nothing visible),
or late (answered over 60 s after it was posted), and the seconds from post to
answer.  Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import redis as redis_client

from benchmarks.worker_kills import QUESTIONS
from bot.convlog import ConversationLog
from bot.local_chat import line_event
from benchmarks.report import write_json
from config.settings import PROJECT_ROOT, Settings
from tests.fake_apis import FakeLineApi
from tests.procfile import Process, RedisServer, post_line_event, production_env, status, wait_until

LATE_S = 60
REPLY, MESSAGES = "/v2/bot/message/reply", "/v2/bot/message/"
GIVEN_UP = ("undelivered", "unconfirmed")  # send results of an answer the bot gave up on, for operators
DEFAULT_INTERVALS = ",".join(map(str, Settings().job_retry_intervals))


class TimedLineApi(FakeLineApi):
    """The fake LINE API, also noting when it accepted each message, to time post to answer."""

    def __init__(self):
        self.accepted: list[tuple[str, float]] = []  # (reply token or push address, time)
        super().__init__()

    def answer(self, request, body):
        status_code, answer = super().answer(request, body)
        if status_code == 200 and MESSAGES in request.path:
            self.accepted.append((body.get("replyToken") or body.get("to"), time.time()))
        return status_code, answer

    def reset(self) -> None:
        super().reset()
        self.accepted.clear()


class Bot:
    """One fault's fresh processes: redis-server, fake LINE API, web and worker."""

    def __init__(self, folder: Path, **env):
        self.folder, self.processes, self.posted = folder, [], {}  # posted: resident -> (event, time)
        self.api, self.redis_server = TimedLineApi(), RedisServer(folder / "aof")
        self.redis = redis_client.Redis.from_url(self.redis_server.url)
        self.env = {**production_env(self.redis_server.url, self.api.url, folder), "LOG_LEVEL": "WARNING", **env}
        self.url = f"http://127.0.0.1:{self.env['PORT']}"
        self.worker = None

    def boot(self) -> None:
        self.redis_server.start()
        self.start("web")
        self.worker = self.start("worker")
        wait_until(lambda: status(self.url + "/healthz") == 200, 300, "the bot is up")

    def start(self, kind: str) -> Process:
        process = Process(kind, self.env, self.folder)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in self.processes:
            process.stop(sig=9)
        if self.redis_server.popen:
            self.redis_server.stop()
        self.api.close()

    def post(self, user: str) -> None:
        event = line_event(user, "message", text=QUESTIONS[len(self.posted) % len(QUESTIONS)])
        self.posted[user] = (event, time.time())
        post_line_event(self.url, event).raise_for_status()

    def has(self, mark: str, user: str) -> bool:
        """Whether the message of ``user`` has the ``bot.send_marks`` mark "sending" or "sent"."""
        return bool(self.redis.exists(f"event:{mark}:line:{self.posted[user][0]['webhookEventId']}"))

    def send_results(self, user: str) -> list[str]:
        """What the bot logged of each try to answer ``user`` ("failed, will retry: …", "reply", "undelivered…")."""
        turns = ConversationLog(self.redis, 30, 1000, 100_000, True).conversation("line", user)  # only read
        return [turn.get("send_result", "") for turn in turns if turn["direction"] == "out"]

    def settled(self, user: str) -> bool:
        """Sent, or given up where operators see it."""
        return self.has("sent", user) or given_up(self.send_results(user))

    def wait_settled(self, timeout_s: float) -> None:
        """Until every posted message settled, or ``timeout_s`` (one that did not counts as lost)."""
        try:
            wait_until(lambda: all(self.settled(user) for user in self.posted), timeout_s, "every message settled")
        except AssertionError:
            pass

    def outcomes(self) -> dict:
        """Per resident: how many answers arrived, seconds from post to the first, and what the bot logged of each
        try."""
        tokens = {event["replyToken"]: user for user, (event, _) in self.posted.items()}
        answers = {}
        for address, when in self.api.accepted:
            answers.setdefault(tokens.get(address, address), []).append(when)
        return {user: {"answers": len(answers.get(user, [])),
                       "seconds": round(answers[user][0] - posted, 1) if user in answers else None,
                       "send_results": [result.split(":")[0] for result in self.send_results(user)]}
                for user, (_, posted) in self.posted.items()}


def worker_killed_mid_send(bot: Bot, args) -> dict:
    """A crash while LINE takes the reply: did that reply count, or does the next worker send another?"""
    for n in range(args.rounds):
        bot.api.hold_next(REPLY, 3)  # LINE takes the reply, but answers only after the kill
        user = f"Ukilled{n:03d}"
        bot.post(user)
        wait_until(lambda: bot.has("sending", user), 30, "the worker is sending")
        bot.worker.stop(sig=9)
        bot.worker = bot.start("worker")
        bot.wait_settled(180)  # the next worker boots, then takes the job back after 20 s of silence
    return {}


def redis_lost_mid_send(bot: Bot, args) -> dict:
    """Redis gone while LINE takes the reply: is the send still recorded, and not repeated?"""
    for n in range(args.rounds):
        bot.api.hold_next(REPLY, 3)
        user = f"Ulost{n:03d}"
        bot.post(user)
        wait_until(lambda: bot.has("sending", user), 30, "the worker is sending")
        bot.redis_server.stop(9)
        time.sleep(5)
        bot.redis_server.start()
        bot.wait_settled(90)
    return {}


def redis_blip_before_retry(bot: Bot, args) -> dict:
    """A retry falling due while Redis is away: does it still go out, and how soon after Redis is back?"""
    back = {}  # resident -> seconds from post until Redis came back
    for n in range(args.rounds):
        bot.api.fail_next(500)  # the first try fails; its retry is due 2 s later
        user = f"Ublip{n:03d}"
        bot.post(user)
        wait_until(lambda: bot.redis.zcard("rq:scheduled:events") >= 1, 30, "the retry is scheduled")
        bot.redis_server.stop()
        time.sleep(3)
        bot.redis_server.start()
        back[user] = time.time() - bot.posted[user][1]
        bot.wait_settled(60)
    outcomes = bot.outcomes()
    after = [outcomes[user]["seconds"] - back[user] for user in back if outcomes[user]["seconds"] is not None]
    return {"answer_after_redis_back_s": summary(after)}


def flaky_api(bot: Bot, args) -> dict:
    """An unsteady LINE API under a crowd: does every resident get one answer, or a visible give-up?"""
    bot.api.fail_randomly(0.4, MESSAGES, seed=1)
    for n in range(args.messages):
        bot.post(f"Uflaky{n:04d}")
    bot.wait_settled(sum(map(int, args.retry_intervals.split(","))) + 300)  # every retry waited out, and then some
    return {}


FAULTS = {"worker-killed-mid-send": worker_killed_mid_send, "redis-lost-mid-send": redis_lost_mid_send,
          "redis-blip-before-retry": redis_blip_before_retry, "flaky-api": flaky_api}
COLUMNS = ("answered once", "doubled", "given up visibly", "lost", "late")


def given_up(send_results: list[str]) -> bool:
    """The bot's last try ended with a result that hands the conversation to operators."""
    return bool(send_results) and send_results[-1].startswith(GIVEN_UP)


def summary(seconds: list[float]) -> dict:
    """Median and worst, the two numbers a resident's wait is judged by."""
    return {"p50": round(statistics.median(seconds), 1), "max": round(max(seconds), 1)} if seconds else {}


def tally(outcomes: dict) -> dict:
    """The counts one table row shows."""
    count = Counter()
    for outcome in outcomes.values():
        if outcome["answers"]:
            count["answered once" if outcome["answers"] == 1 else "doubled"] += 1
            if outcome["seconds"] > LATE_S:
                count["late"] += 1
        elif given_up(outcome["send_results"]):
            count["given up visibly"] += 1
        else:
            count["lost"] += 1
    answered = [o["seconds"] for o in outcomes.values() if o["seconds"] is not None]
    return {"messages": len(outcomes), **{key: count[key] for key in COLUMNS}, "post_to_answer_s": summary(answered)}


def run(fault: str, args, folder: Path) -> dict:
    """One fault against fresh processes; its counts, and each message's outcome."""
    intervals = args.retry_intervals if fault == "flaky-api" else DEFAULT_INTERVALS
    bot = Bot(folder / fault, JOB_RETRY_INTERVALS=intervals)
    started, extra, error = time.monotonic(), {}, None
    try:
        try:
            bot.boot()
            extra = FAULTS[fault](bot, args)
            time.sleep(2)  # a second answer would arrive now
        except AssertionError as stuck:  # the fault could not be injected: keep what the rounds so far showed
            error = str(stuck)
        outcomes = bot.outcomes()
    finally:
        bot.close()
    return {**tally(outcomes), **extra, "error": error, "retry_intervals": intervals,
            "seconds": round(time.monotonic() - started), "logs": str(folder / fault), "outcomes": outcomes}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fault", choices=list(FAULTS), action="append", help="(repeatable; default: all)")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of each single-message fault")
    parser.add_argument("--messages", type=int, default=200, help="messages (and residents) for flaky-api")
    parser.add_argument("--retry-intervals", default=DEFAULT_INTERVALS,
                        help="JOB_RETRY_INTERVALS for flaky-api (the other faults use the default)")
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "faults.json")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request to the fake API

    folder = Path(tempfile.mkdtemp(prefix="faults-"))
    print(f"NLU_TUNED_ENCODER=off for quick boots (the answers' wording is not what production sends; "
          f"their delivery is what counts); logs under {folder}")
    report = {}
    for fault in args.fault or FAULTS:
        print(f"{fault}…", flush=True)
        report[fault] = run(fault, args, folder)
        if report[fault]["error"]:
            print(f"  stopped early: {report[fault]['error']}")
    print(f"\n{'fault':<24} {'msgs':>5} {'once':>5} {'doubled':>7} {'gave up':>7} {'lost':>5} {'late':>5} "
          f"{'p50 s':>6} {'max s':>6}  retry intervals")
    for fault, row in report.items():
        timing = row["post_to_answer_s"]
        print(f"{fault:<24} {row['messages']:>5} {row['answered once']:>5} {row['doubled']:>7} "
              f"{row['given up visibly']:>7} {row['lost']:>5} {row['late']:>5} {timing.get('p50', '-'):>6} "
              f"{timing.get('max', '-'):>6}  {row['retry_intervals']}")
    if "redis-blip-before-retry" in report:
        print(f"redis-blip-before-retry: answered "
              f"{report['redis-blip-before-retry'].get('answer_after_redis_back_s')} s after Redis came back")
    write_json(args.json, {"late_after_s": LATE_S, "nlu_tuned_encoder": "off", "faults": report})


if __name__ == "__main__":
    main()
