"""A small Dropbox API server on loopback that speaks the wire format the SDK uses.

Routes: oauth2/token (refresh-token grant), 2/files/upload, upload_session/start,
append_v2, finish, get_metadata, download, delete_v2, list_folder (recursive, in pages of
`list_page_size` entries) and list_folder/continue. Arguments come in the Dropbox-API-Arg header
(content routes) or a JSON body (RPC routes); errors are JSON bodies with error_summary
and a tagged error (409), 401 for a bad or expired access token, 429 with Retry-After,
500. content_hash is computed the Dropbox way: the sha256 of the concatenated sha256
digests of each 4 MiB block.

Faults are queued per route: `fail_next(route, status, times, retry_after_s)` and
`cut_next(route)` (read half the body, then drop the connection without a reply).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

BLOCK = 4 * 1024 * 1024
APP_KEY = "retrainer-test-app"
APP_SECRET = "app-secret-0f9e8d7c6b5a"
REFRESH_TOKEN = "refresh-token-ZmFrZS1yZWZyZXNoLXRva2VuLTEyMw"


def dropbox_content_hash(data: bytes) -> str:
    blocks = b"".join(
        hashlib.sha256(data[i : i + BLOCK]).digest() for i in range(0, len(data), BLOCK)
    )
    return hashlib.sha256(blocks).hexdigest()


@dataclass
class Fault:
    status: int | None  # None: cut the connection halfway through the body
    retry_after_s: int | None = None


@dataclass
class Seen:
    route: str
    status: int
    at: float  # monotonic


@dataclass
class StoredFile:
    path_display: str
    data: bytes
    rev: str
    modified: str

    def metadata(self) -> dict[str, Any]:
        return {
            ".tag": "file",
            "name": self.path_display.rsplit("/", 1)[-1],
            "id": "id:" + hashlib.sha1(self.path_display.lower().encode()).hexdigest()[:22],
            "client_modified": self.modified,
            "server_modified": self.modified,
            "rev": self.rev,
            "size": len(self.data),
            "path_lower": self.path_display.lower(),
            "path_display": self.path_display,
            "content_hash": dropbox_content_hash(self.data),
            "is_downloadable": True,
        }


@dataclass
class State:
    files: dict[str, StoredFile] = field(default_factory=dict)  # by lower-cased path
    sessions: dict[str, bytearray] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # access token → expiry
    faults: dict[str, list[Fault]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    token_lifetime_s: int = 14400
    list_page_size: int = 500  # entries per list_folder page
    lock: threading.Lock = field(default_factory=threading.Lock)


class DropboxTestServer:
    def __init__(self) -> None:
        self.state = State()
        state = self.state

        class Handler(_Handler):
            pass

        Handler.state = state
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def start(self) -> DropboxTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)

    # -- for tests ---------------------------------------------------------------
    def fail_next(
        self, route: str, status: int, times: int = 1, retry_after_s: int | None = None
    ) -> None:
        with self.state.lock:
            self.state.faults.setdefault(route, []).extend(
                Fault(status, retry_after_s) for _ in range(times)
            )

    def cut_next(self, route: str, times: int = 1) -> None:
        with self.state.lock:
            self.state.faults.setdefault(route, []).extend(Fault(None) for _ in range(times))

    def read(self, path: str) -> bytes:
        return self.state.files[path.lower()].data

    def paths(self) -> list[str]:
        return sorted(f.path_display for f in self.state.files.values())

    def overwrite(self, path: str, data: bytes) -> None:
        """Change a stored file behind the client's back (a corrupted remote copy)."""
        with self.state.lock:
            stored = self.state.files[path.lower()]
            self.state.files[path.lower()] = StoredFile(
                stored.path_display, data, _new_rev(), _now()
            )

    def seen(self, route: str) -> list[Seen]:
        with self.state.lock:
            return [s for s in self.state.seen if s.route == route]

    def expire_tokens(self) -> None:
        with self.state.lock:
            self.state.tokens = {t: 0.0 for t in self.state.tokens}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _new_rev() -> str:
    return secrets.token_hex(8)


def _folder_metadata(path_display: str) -> dict[str, Any]:
    return {
        ".tag": "folder",
        "name": path_display.rsplit("/", 1)[-1],
        "id": "id:" + hashlib.sha1(path_display.lower().encode()).hexdigest()[:22],
        "path_lower": path_display.lower(),
        "path_display": path_display,
    }


def _path_error(tag: str, summary: str) -> dict[str, Any]:
    return {"error_summary": f"path/{summary}/..", "error": {".tag": "path", "path": {".tag": tag}}}


class _Handler(BaseHTTPRequestHandler):
    state: State
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:  # noqa: N802 (the http.server spelling)
        route = self.path.split("?", 1)[0].lstrip("/")
        fault = self._take_fault(route)
        if fault is not None and fault.status is None:
            self._cut()
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if fault is not None:
            self._fault(route, fault)
            return
        if route == "oauth2/token":
            self._token(body)
            return
        if not self._authorised(route):
            return
        handler = ROUTES.get(route)
        if handler is None:
            self._json(route, 400, {"error_summary": f"unknown route {route}"})
            return
        try:
            arg = json.loads(self.headers.get("Dropbox-API-Arg") or body or b"null")
        except ValueError:
            self._json(route, 400, {"error_summary": "bad argument"})
            return
        handler(self, route, arg, body)

    # -- plumbing --------------------------------------------------------------------
    def _take_fault(self, route: str) -> Fault | None:
        with self.state.lock:
            queue = self.state.faults.get(route)
            return queue.pop(0) if queue else None

    def _record(self, route: str, status: int) -> None:
        with self.state.lock:
            self.state.seen.append(Seen(route, status, time.monotonic()))

    def _cut(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length // 2)
        self._record(self.path.lstrip("/"), 0)
        self.close_connection = True
        self.connection.shutdown(2)

    def _fault(self, route: str, fault: Fault) -> None:
        assert fault.status is not None
        if fault.status == 429:
            retry = fault.retry_after_s or 1
            body = {
                "error_summary": "too_many_requests/..",
                "error": {"reason": {".tag": "too_many_requests"}, "retry_after": retry},
            }
            self._json(route, 429, body, {"Retry-After": str(retry)})
        else:
            self._send(route, fault.status, b"Internal Server Error", "text/plain")

    def _send(
        self,
        route: str,
        status: int,
        payload: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
    ) -> None:
        self._record(route, status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Dropbox-Request-Id", uuid.uuid4().hex)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def _json(
        self, route: str, status: int, obj: Any, headers: dict[str, str] | None = None
    ) -> None:
        self._send(route, status, json.dumps(obj).encode(), "application/json", headers)

    def _token(self, body: bytes) -> None:
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        ok = (
            form.get("grant_type") == "refresh_token"
            and form.get("refresh_token") == REFRESH_TOKEN
            and form.get("client_id") == APP_KEY
            and form.get("client_secret") in (None, APP_SECRET)
        )
        if not ok:
            self._json(
                "oauth2/token",
                400,
                {"error": "invalid_grant", "error_description": "refresh token is invalid"},
            )
            return
        token = "sl." + secrets.token_urlsafe(24)
        with self.state.lock:
            lifetime = self.state.token_lifetime_s
            self.state.tokens[token] = time.monotonic() + lifetime
        self._json(
            "oauth2/token",
            200,
            {"access_token": token, "expires_in": lifetime, "token_type": "bearer"},
        )

    def _authorised(self, route: str) -> bool:
        auth = self.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ")
        with self.state.lock:
            expiry = self.state.tokens.get(token)
        if expiry is None or expiry <= time.monotonic():
            tag = "invalid_access_token" if expiry is None else "expired_access_token"
            self._json(route, 401, {"error_summary": f"{tag}/", "error": {".tag": tag}})
            return False
        return True

    # -- routes --------------------------------------------------------------------
    def upload(self, route: str, arg: dict[str, Any], body: bytes) -> None:
        if not self._hash_ok(route, arg, body):
            return
        self._commit(route, arg, bytes(body))

    def session_start(self, route: str, arg: dict[str, Any], body: bytes) -> None:
        if not self._hash_ok(route, arg, body):
            return
        session_id = uuid.uuid4().hex
        with self.state.lock:
            self.state.sessions[session_id] = bytearray(body)
        self._json(route, 200, {"session_id": session_id})

    def session_append(self, route: str, arg: dict[str, Any], body: bytes) -> None:
        if not self._hash_ok(route, arg, body) or not self._offset_ok(route, arg["cursor"]):
            return
        with self.state.lock:
            self.state.sessions[arg["cursor"]["session_id"]] += body
        self._json(route, 200, None)

    def session_finish(self, route: str, arg: dict[str, Any], body: bytes) -> None:
        if not self._hash_ok(route, arg, body) or not self._offset_ok(route, arg["cursor"]):
            return
        with self.state.lock:
            data = bytes(self.state.sessions.pop(arg["cursor"]["session_id"]) + body)
        self._commit(route, arg["commit"], data)

    def get_metadata(self, route: str, arg: dict[str, Any], body: bytes) -> None:
        with self.state.lock:
            stored = self.state.files.get(str(arg["path"]).lower())
        if stored is None:
            self._json(route, 409, _path_error("not_found", "not_found"))
            return
        self._json(route, 200, stored.metadata())

    def download(self, route: str, arg: dict[str, Any], body: bytes) -> None:
        with self.state.lock:
            stored = self.state.files.get(str(arg["path"]).lower())
        if stored is None:
            self._json(route, 409, _path_error("not_found", "not_found"))
            return
        self._send(
            route,
            200,
            stored.data,
            "application/octet-stream",
            {"Dropbox-API-Result": json.dumps(stored.metadata())},
        )

    def delete(self, route: str, arg: dict[str, Any], body: bytes) -> None:
        with self.state.lock:
            stored = self.state.files.pop(str(arg["path"]).lower(), None)
        if stored is None:
            error = {".tag": "path_lookup", "path_lookup": {".tag": "not_found"}}
            self._json(route, 409, {"error_summary": "path_lookup/not_found/..", "error": error})
            return
        self._json(route, 200, {"metadata": stored.metadata()})

    def list_folder(self, route: str, arg: dict[str, Any], body: bytes) -> None:
        entries = self._listing(str(arg["path"]), bool(arg.get("recursive", False)))
        if entries is None:
            self._json(route, 409, _path_error("not_found", "not_found"))
            return
        self._page(route, str(arg["path"]), bool(arg.get("recursive", False)), 0, entries)

    def list_folder_continue(self, route: str, arg: dict[str, Any], body: bytes) -> None:
        cursor = json.loads(bytes.fromhex(str(arg["cursor"])))
        entries = self._listing(cursor["path"], cursor["recursive"]) or []
        self._page(route, cursor["path"], cursor["recursive"], cursor["offset"], entries)

    def _listing(self, path: str, recursive: bool) -> list[dict[str, Any]] | None:
        """The folder's entries as Dropbox lists them: the folder itself, then its
        (implicit) sub-folders and files; None when nothing is stored under it."""
        base = path.rstrip("/").lower()
        with self.state.lock:
            inside = [f for k, f in self.state.files.items() if k.startswith(base + "/")]
        if not inside:
            return None
        folders: dict[str, str] = {base: path.rstrip("/")}
        files = []
        for stored in inside:
            rest = stored.path_display[len(base) + 1 :].split("/")
            if not recursive and len(rest) > 1:
                display = stored.path_display[: len(base) + 1 + len(rest[0])]
                folders.setdefault(display.lower(), display)
                continue
            for depth in range(1, len(rest)):
                display = stored.path_display[: len(base) + len("/".join(rest[:depth])) + 1]
                folders.setdefault(display.lower(), display)
            files.append(stored.metadata())
        folder_entries = [_folder_metadata(display) for _, display in sorted(folders.items())]
        return folder_entries + sorted(files, key=lambda m: str(m["path_lower"]))

    def _page(
        self, route: str, path: str, recursive: bool, offset: int, entries: list[dict[str, Any]]
    ) -> None:
        end = offset + self.state.list_page_size
        cursor = json.dumps({"path": path, "recursive": recursive, "offset": end})
        self._json(
            route,
            200,
            {
                "entries": entries[offset:end],
                "cursor": cursor.encode().hex(),
                "has_more": end < len(entries),
            },
        )

    def _commit(self, route: str, commit: dict[str, Any], data: bytes) -> None:
        mode = commit.get("mode", "add")
        mode = mode.get(".tag") if isinstance(mode, dict) else mode
        path = str(commit["path"])
        lower = path.lower()
        parents = {lower[:i] for i in range(1, len(lower)) if lower[i] == "/"}
        with self.state.lock:
            if (
                (mode != "overwrite" and lower in self.state.files)
                or any(p in self.state.files for p in parents)
                or any(f.startswith(lower + "/") for f in self.state.files)
            ):
                conflict = True
            else:
                conflict = False
                self.state.files[path.lower()] = StoredFile(path, data, _new_rev(), _now())
                meta = self.state.files[path.lower()].metadata()
        if conflict:
            self._json(
                route,
                409,
                {
                    "error_summary": "path/conflict/file/..",
                    "error": {
                        ".tag": "path",
                        "reason": {".tag": "conflict", "conflict": {".tag": "file"}},
                        "upload_session_id": "",
                    },
                },
            )
            return
        self._json(route, 200, meta)

    def _hash_ok(self, route: str, arg: dict[str, Any], body: bytes) -> bool:
        expected = arg.get("content_hash") if isinstance(arg, dict) else None
        if expected and expected != dropbox_content_hash(body):
            self._json(route, 400, {"error_summary": "content_hash_mismatch/"})
            return False
        return True

    def _offset_ok(self, route: str, cursor: dict[str, Any]) -> bool:
        with self.state.lock:
            session = self.state.sessions.get(cursor["session_id"])
        if session is None:
            self._json(route, 409, {"error_summary": "not_found/", "error": {".tag": "not_found"}})
            return False
        if len(session) != cursor["offset"]:
            self._json(
                route,
                409,
                {
                    "error_summary": "incorrect_offset/",
                    "error": {".tag": "incorrect_offset", "correct_offset": len(session)},
                },
            )
            return False
        return True


ROUTES = {
    "2/files/upload": _Handler.upload,
    "2/files/upload_session/start": _Handler.session_start,
    "2/files/upload_session/append_v2": _Handler.session_append,
    "2/files/upload_session/finish": _Handler.session_finish,
    "2/files/get_metadata": _Handler.get_metadata,
    "2/files/download": _Handler.download,
    "2/files/delete_v2": _Handler.delete,
    "2/files/list_folder": _Handler.list_folder,
    "2/files/list_folder/continue": _Handler.list_folder_continue,
}
