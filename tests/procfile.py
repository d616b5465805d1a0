"""The Procfile's processes started as a PaaS starts them, for tests that kill and restart them."""
from __future__ import annotations

import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

from config.settings import PROJECT_ROOT

COMMANDS = dict(line.split(":", 1) for line in (PROJECT_ROOT / "Procfile").read_text().splitlines() if ":" in line)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until(check, timeout_s: float, what: str) -> float:
    """Seconds until ``check()`` is true; fails the test after ``timeout_s``."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - started


class Process:
    """One Procfile entry (``web`` or ``worker``) running with ``env``, its output kept in a file."""

    def __init__(self, kind: str, env: dict, log_dir: Path):
        self.log_path = log_dir / f"{kind}-{time.monotonic_ns()}.log"
        path = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # this venv's gunicorn, python
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(shlex.split(COMMANDS[kind]), env={**env, "PATH": path}, cwd=PROJECT_ROOT,
                                          stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=15, timeout_s: float = 30) -> int:
        """Signal the process (and, after ``timeout_s``, kill what is left of its group); its exit status."""
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, 9)
            return self.popen.wait()
        finally:
            try:
                os.killpg(self.popen.pid, 9)  # children a SIGKILL left behind (RQ's scheduler)
            except ProcessLookupError:
                pass
