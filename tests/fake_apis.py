"""Fake LINE and Slack Web APIs on loopback that record what the real SDKs sent.

Tests point ``LINE_API_BASE_URL`` / ``SLACK_API_BASE_URL`` here and assert on
the recorded requests; ``fail_next`` makes the next matching calls answer an
error, as the real services sometimes do.
"""
from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict
    body: dict
    status: int


class FakeApi:
    """Serves on a free port in a thread; subclasses say how to answer."""

    def __init__(self):
        self.requests: list[Recorded] = []
        self._failures: list[tuple[int, str, dict]] = []
        self._holds: list[tuple[str, float]] = []
        self._flaky: tuple[float, str, random.Random] | None = None
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self._holds.clear()
            self._flaky = None

    def fail_next(self, status: int, times: int = 1, path: str = "", body: dict | None = None) -> None:
        """The next ``times`` requests whose path contains ``path`` answer ``status`` (and ``body``)."""
        with self._lock:
            self._failures.extend([(status, path, body or {"message": f"fake error {status}"})] * times)

    def fail_randomly(self, ratio: float, path: str, seed: int = 0) -> None:
        """From now on, answer 503 to that share of the requests whose path contains ``path`` (an unsteady API)."""
        with self._lock:
            self._flaky = (ratio, path, random.Random(seed))

    def hold_next(self, path: str, seconds: float) -> None:
        """The next request whose path contains ``path`` is answered only after ``seconds`` (a slow platform)."""
        with self._lock:
            self._holds.append((path, seconds))

    def close(self) -> None:
        self._server.shutdown()

    def answer(self, request: Request, body: dict) -> tuple[int, dict]:
        raise NotImplementedError

    def _app(self, environ, start_response):
        request = Request(environ)
        body = request.get_json(silent=True) or request.form.to_dict() or {}
        with self._lock:
            hold = next((i for i, (part, _) in enumerate(self._holds) if part in request.path), None)
            seconds = 0.0 if hold is None else self._holds.pop(hold)[1]
        time.sleep(seconds)
        with self._lock:
            status, answer = self._failure_for(request.path) or self.answer(request, body)
            self.requests.append(Recorded(request.method, request.path, dict(request.headers), body, status))
        headers = {"Retry-After": "1"} if status == 429 else {}
        return Response(json.dumps(answer), status=status, mimetype="application/json",
                        headers=headers)(environ, start_response)

    def _failure_for(self, path: str):
        for i, (status, part, body) in enumerate(self._failures):
            if part in path:
                del self._failures[i]
                return status, body
        if self._flaky and self._flaky[1] in path and self._flaky[2].random() < self._flaky[0]:
            return 503, {"message": "fake unsteady API"}
        return None


class FakeLineApi(FakeApi):
    """Like LINE: 409 for a push retry key already accepted, 400 for a reply token already used, 202 for the
    loading animation."""

    def __init__(self):
        self._retry_keys: set[str] = set()
        self._used_reply_tokens: set[str] = set()
        super().__init__()

    def reset(self) -> None:
        super().reset()
        self._retry_keys.clear()
        self._used_reply_tokens.clear()

    def fail_next(self, status: int, times: int = 1, path: str = "/v2/bot/message/", body=None) -> None:
        super().fail_next(status, times, path, body)

    def sent(self, path_suffix: str = "") -> list[Recorded]:
        """Successful message sends (reply/push), optionally of one kind."""
        return [
            r for r in self.requests
            if r.status == 200 and "/v2/bot/message/" in r.path and r.path.endswith(path_suffix)
        ]

    def answer(self, request, body):
        if request.path.endswith("/chat/loading/start"):
            return 202, {}
        token = body.get("replyToken")
        if token in self._used_reply_tokens:
            return 400, {"message": "Invalid reply token"}
        if token:
            self._used_reply_tokens.add(token)
        key = request.headers.get("X-Line-Retry-Key")
        if key in self._retry_keys:
            return 409, {"message": "The retry key is already accepted"}
        if key:
            self._retry_keys.add(key)
        return 200, {"sentMessages": [{"id": str(i), "quoteToken": "q"} for i, _ in enumerate(body.get("messages", []))]}


class FakeSlackApi(FakeApi):
    """Like Slack's Web API: 200 with ``ok`` for chat.postMessage and chat.update."""

    def sent(self, method: str = "chat.postMessage") -> list[Recorded]:
        return [r for r in self.requests if r.path.endswith("/" + method) and r.status == 200]

    def answer(self, request, body):
        if request.headers.get("Authorization") != "Bearer xoxb-test":
            return 200, {"ok": False, "error": "invalid_auth"}
        return 200, {"ok": True, "channel": body.get("channel"), "ts": f"{len(self.requests) + 1}.000100"}
