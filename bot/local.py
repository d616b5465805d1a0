"""``python -m bot.local``: everything on one machine, no LINE account needed.

Starts an embedded Redis, one worker and the web process (gunicorn, as in
production), waits until /healthz is green and prints where to chat.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

from bot.redis_conn import start_embedded, url_of
from config.settings import LOCAL_OPERATOR, Settings


def wait_healthy(url: str, processes, timeout_s: float = 180) -> bool:
    """Poll /healthz, showing progress, until it is green or a process died."""
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if any(p.poll() is not None for p in processes):
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        print(".", end="", flush=True)
        time.sleep(1)
    return False


def _stop_on_sigterm(signum, frame) -> None:
    """A process manager (or ``docker stop``) sends SIGTERM: stop as on Ctrl-C, so the worker, the web process
    and the embedded Redis go with us instead of living on as orphans."""
    raise KeyboardInterrupt


def main(argv=None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", default=os.environ.get("PORT", "8000"))
    args = parser.parse_args(argv)
    env = {**os.environ, "PORT": str(args.port), "BOT_MODE": "local"}
    settings = Settings.from_env(env)
    redis = None
    if not settings.redis_url:
        redis = start_embedded(settings.redis_embedded_path)
        env["REDIS_URL"] = url_of(redis)
    print(f"Redis: {env.get('REDIS_URL')}  ·  FAQ: {settings.faq_dir}")
    processes = [
        subprocess.Popen([sys.executable, "-m", "bot.worker"], env=env),
        subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py",
                          "--workers", "1", "--access-logfile", "/dev/null", "bot.app:create_app()"], env=env),
    ]
    print("Starting the worker (loads the model) and the web process", end="", flush=True)
    try:
        if not wait_healthy(f"http://127.0.0.1:{args.port}/healthz", processes):
            print("\nStartup failed: see the messages above.", file=sys.stderr)
            return 1
        base = f"http://127.0.0.1:{args.port}"
        local_login = settings.console_operators == LOCAL_OPERATOR
        print(f"\n\n  Chat with the bot:  {base}/\n"
              f"  Operator console:   {base}/console{'   (operator / operator)' if local_login else ''}\n"
              f"  Health:             {base}/healthz\n  Stop with Ctrl-C.\n", flush=True)
        while all(p.poll() is None for p in processes):
            time.sleep(1)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for p in processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        del redis


if __name__ == "__main__":
    sys.exit(main())
