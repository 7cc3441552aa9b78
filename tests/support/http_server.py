"""A small HTTP server on 127.0.0.1 for tests: records every request and answers as told.

It stands in for a webhook receiver (Slack's incoming webhooks answer `ok`, 429 with
Retry-After, 404 `no_service`…), a healthchecks.io ping endpoint (`OK`) and, when Debian's
prometheus-pushgateway is not installed, a Pushgateway (PUT/POST /metrics/job/…: 200).

    server = RecordingServer().start()
    server.script("429", "500")      # the next requests get these answers, then "ok"
    server.url                       # "http://127.0.0.1:PORT"
    server.wait_for(2)               # until two requests were answered "ok"
    server.requests                  # every Recorded request, in order

Answers: "ok" (200), "429" (Retry-After: 1), "500", "503", "400", "404", "hang" (no answer
until the server stops, or HANG_LIMIT_S).
"""

from __future__ import annotations

import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG_LIMIT_S = 120.0  # a hanging answer gives up by itself, whatever the test does
BODIES = {
    "ok": (200, b"OK"),
    "429": (429, b"rate limited"),
    "500": (500, b"rollup_error"),
    "503": (503, b"unavailable"),
    "400": (400, b"invalid_payload"),
    "404": (404, b"no_service"),
}


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    answer: str = "ok"
    at: float = 0.0  # time.monotonic() when it arrived
    extra: dict[str, Any] = field(default_factory=dict)

    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return self.body.decode("utf-8")


class RecordingServer:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: list[str] = []
        self._default = "ok"
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> RecordingServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def script(self, *answers: str, then: str = "ok") -> None:
        """The next requests get these answers in order; every later one gets `then`."""
        with self._lock:
            self._script = list(answers)
            self._default = then

    def answered(self, answer: str = "ok") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.answer == answer]

    def wait_for(self, count: int, timeout_s: float = 30) -> list[Recorded]:
        end = time.monotonic() + timeout_s
        while len(self.answered()) < count:
            if time.monotonic() > end:
                raise AssertionError(f"{count} requests not answered ok: {self.requests}")
            time.sleep(0.02)
        return self.answered()

    def _record(self, recorded: Recorded) -> str:
        with self._lock:
            recorded.answer = self._script.pop(0) if self._script else self._default
            recorded.at = time.monotonic()
            self.requests.append(recorded)
            return recorded.answer


def _handler_for(server: RecordingServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = urllib.parse.urlsplit(self.path)
            recorded = Recorded(
                method=self.command,
                path=urllib.parse.unquote(parts.path),
                query=dict(urllib.parse.parse_qsl(parts.query)),
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            answer = server._record(recorded)
            if answer == "hang":
                server._stopping.wait(HANG_LIMIT_S)
                self.close_connection = True
                return
            status, data = BODIES[answer]
            self.send_response(status)
            if answer == "429":
                self.send_header("Retry-After", "1")
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_HEAD = do_DELETE = _serve  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler
