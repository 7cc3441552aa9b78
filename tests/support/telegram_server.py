"""A small Bot API server on 127.0.0.1 for tests: speaks the wire format, records requests.

    server = FakeBotApi().start()
    server.script("429", "500")      # the next requests get these answers, then "ok"
    server.api_url                   # "http://127.0.0.1:PORT": the notifier's [notify] api_url
    server.texts()                   # the sendMessage texts received, in order

Answers: "ok", "429" (retry_after 1 s), "500", "401", "400", "hang" (no answer until the
server stops). `/bot<TOKEN>/<method>` with form fields (sendMessage) or multipart
(sendDocument) is parsed into a Recorded request.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HANG_LIMIT_S = 120.0  # a hanging answer gives up by itself, whatever the test does


@dataclass
class Recorded:
    method: str
    token: str
    fields: dict[str, str]
    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # name → (filename, body)
    answer: str = "ok"
    at: float = 0.0


class FakeBotApi:
    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self._script: list[str] = []
        self._default = "ok"
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._message_id = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeBotApi:
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

    def texts(self) -> list[str]:
        return [r.fields["text"] for r in self.of("sendMessage") if r.answer == "ok"]

    def of(self, method: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.method == method]

    def wait_for(self, count: int, method: str = "sendMessage", timeout_s: float = 30) -> None:
        end = time.monotonic() + timeout_s
        while len([r for r in self.of(method) if r.answer == "ok"]) < count:
            if time.monotonic() > end:
                raise AssertionError(f"{count} {method} not received: {self.requests}")
            time.sleep(0.02)

    # -- called by the handler ------------------------------------------------------------
    def _record(self, recorded: Recorded) -> str:
        with self._lock:
            recorded.answer = self._script.pop(0) if self._script else self._default
            recorded.at = time.monotonic()
            self.requests.append(recorded)
            self._message_id += 1
            return recorded.answer

    def _reply(self, answer: str, recorded: Recorded) -> tuple[int, dict[str, Any]]:
        if answer == "429":
            return 429, {
                "ok": False,
                "error_code": 429,
                "description": "Too Many Requests: retry after 1",
                "parameters": {"retry_after": 1},
            }
        if answer in ("500", "401", "400"):
            descriptions = {
                "500": "Internal Server Error",
                "401": "Unauthorized",
                "400": "Bad Request: chat not found",
            }
            return int(answer), {
                "ok": False,
                "error_code": int(answer),
                "description": descriptions[answer],
            }
        chat = {"id": int(recorded.fields.get("chat_id", "1")), "type": "private"}
        if recorded.method == "getMe":
            return 200, {
                "ok": True,
                "result": {"id": 1, "is_bot": True, "first_name": "t", "username": "t_bot"},
            }
        result: dict[str, Any] = {
            "message_id": self._message_id,
            "date": int(time.time()),
            "chat": chat,
            "text": recorded.fields.get("text", ""),
        }
        if recorded.method == "sendDocument":
            result["document"] = {"file_id": "f1", "file_unique_id": "u1"}
        return 200, {"ok": True, "result": result}


def _handler_for(api: FakeBotApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:  # noqa: N802 (the http.server API)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            _, _, rest = self.path.partition("/bot")
            token, _, method = rest.partition("/")
            fields, files = _parse(self.headers.get("Content-Type", ""), body)
            recorded = Recorded(method=method, token=token, fields=fields, files=files)
            answer = api._record(recorded)
            if answer == "hang":
                api._stopping.wait(HANG_LIMIT_S)
                self.close_connection = True
                return
            status, payload = api._reply(answer, recorded)
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST  # noqa: N815

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Handler


def _parse(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, tuple[str, bytes]]]:
    if content_type.startswith("multipart/form-data"):
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {content_type}\r\n\r\n".encode() + body
        )
        fields: dict[str, str] = {}
        files: dict[str, tuple[str, bytes]] = {}
        for part in message.iter_parts():
            name = str(part.get_param("name", header="content-disposition"))
            payload = part.get_payload(decode=True)
            data = payload if isinstance(payload, bytes) else b""
            filename = part.get_filename()
            if filename:
                files[name] = (filename, data)
            else:
                fields[name] = data.decode()
        return fields, files
    pairs = urllib.parse.parse_qsl(body.decode(), keep_blank_values=True)
    return {k: v for k, v in pairs}, {}
