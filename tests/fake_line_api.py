"""A fake LINE Messaging API on loopback that records what the real SDK sent.

Tests point ``LINE_API_BASE_URL`` here and assert on the recorded requests;
``fail_next`` makes the next calls answer an error, as LINE sometimes does.
"""
from __future__ import annotations

import json
import threading
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


class FakeLineApi:
    def __init__(self):
        self.requests: list[Recorded] = []
        self._failures: list[tuple[int, str]] = []
        self._retry_keys: set[str] = set()
        self._lock = threading.Lock()
        self._server = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()
            self._retry_keys.clear()

    def fail_next(self, status: int, times: int = 1, path: str = "/v2/bot/message/") -> None:
        """The next ``times`` requests whose path contains ``path`` answer ``status``."""
        with self._lock:
            self._failures.extend([(status, path)] * times)

    def sent(self, path_suffix: str = "") -> list[Recorded]:
        """Successful message sends (reply/push), optionally of one kind."""
        return [
            r for r in self.requests
            if r.status == 200 and "/v2/bot/message/" in r.path and r.path.endswith(path_suffix)
        ]

    def close(self) -> None:
        self._server.shutdown()

    def _app(self, environ, start_response):
        request = Request(environ)
        body = request.get_json(silent=True) or {}
        with self._lock:
            status = self._failure_for(request.path) or self._status_for(request)
            self.requests.append(Recorded(request.method, request.path, dict(request.headers), body, status))
        if status == 200:
            answer = {"sentMessages": [{"id": str(i), "quoteToken": "q"} for i, _ in enumerate(body.get("messages", []))]}
        elif status == 202:
            answer = {}
        else:
            answer = {"message": f"fake error {status}"}
        return Response(json.dumps(answer), status=status, mimetype="application/json")(environ, start_response)

    def _failure_for(self, path: str) -> int | None:
        for i, (status, part) in enumerate(self._failures):
            if part in path:
                del self._failures[i]
                return status
        return None

    def _status_for(self, request) -> int:
        """Like LINE: 409 for a push retry key already accepted, 202 for the loading animation."""
        if request.path.endswith("/chat/loading/start"):
            return 202
        key = request.headers.get("X-Line-Retry-Key")
        if key:
            if key in self._retry_keys:
                return 409
            self._retry_keys.add(key)
        return 200
