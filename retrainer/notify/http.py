"""Plain HTTP for the notifiers that speak it (webhook, healthchecks pings, Pushgateway).

One request at a time, from the notifier's own thread, through the standard library's
client (nothing to install). Each request is bounded by its timeout; a 429 waits for its
Retry-After, a 5xx, a 408 or a network error is retried after a short backoff, a bounded
number of times; any other answer is final. 401/403/404/410 (a wrong URL or credentials)
also stop every later request of that notifier. Once `close()` has set the notifier's
deadline, no request starts and no wait runs past it.

URLs and headers may hold secrets (a Slack webhook URL, a ping URL's uuid, a token): a log
line or a reason names the host only.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.utils import parsedate_to_datetime

import structlog

from retrainer.notify.protocol import NOTIFY_FAILED, NOTIFY_RETRY, NOTIFY_SENT

RETRY_BASE_S = 0.5
RETRY_CAP_S = 8.0
RETRY_AFTER_CAP_S = 60.0  # a Retry-After longer than this is waited for this long
SLEEP_STEP_S = 0.1  # waits are sliced, so that the close deadline is seen promptly
ANSWER_BYTES_KEPT = 200
# Answers after which no later request of the notifier can succeed.
REFUSED = frozenset({401, 403, 404, 410})


@dataclass(frozen=True)
class HttpRequest:
    method: str
    url: str = field(repr=False)
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class HttpAnswer:
    status: int | None  # None: no answer (refused, reset, timed out)
    reason: str = ""
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


def retry_delay_s(answer: HttpAnswer, attempt: int) -> float | None:
    """Seconds to wait before retrying after this answer to attempt (0-based); None: the
    answer is final. A pure function: 429 and 503 honour Retry-After."""
    backoff = min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt)
    status = answer.status
    if status is None or status == 408 or (status >= 500 and status != 501):
        wait = answer.retry_after_s if status == 503 else None
        return backoff if wait is None else min(wait, RETRY_AFTER_CAP_S)
    if status == 429:
        wait = answer.retry_after_s
        return backoff if wait is None else min(wait, RETRY_AFTER_CAP_S)
    return None


def host_of(url: str) -> str:
    """What a log line may say of a URL: its host (and port), never its path or query."""
    try:
        parts = urllib.parse.urlsplit(url)
        return parts.hostname + (f":{parts.port}" if parts.port else "") if parts.hostname else "?"
    except ValueError:
        return "?"


def send_once(request: HttpRequest, timeout_s: float) -> HttpAnswer:
    """One request; never raises. The reason names the host, never the URL."""
    host = host_of(request.url)
    prepared = urllib.request.Request(
        request.url,
        data=request.body if request.method not in ("GET", "HEAD") else None,
        headers=dict(request.headers),
        method=request.method,
    )
    try:
        with urllib.request.urlopen(prepared, timeout=timeout_s) as response:
            response.read(ANSWER_BYTES_KEPT)
            return HttpAnswer(response.status, f"HTTP {response.status} from {host}")
    except urllib.error.HTTPError as exc:
        status = exc.code
        text = _answer_text(exc)
        reason = f"HTTP {status} from {host}" + (f": {text}" if text else "")
        return HttpAnswer(status, reason, _retry_after_s(exc.headers))
    except (OSError, http.client.HTTPException, ValueError) as exc:
        # URLError wraps the socket's error: say that one.
        cause = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        what = cause if isinstance(cause, str) else f"{type(cause).__name__}: {cause}"
        return HttpAnswer(None, f"no answer from {host} ({_without_url(str(what), request.url)})")


def _answer_text(exc: urllib.error.HTTPError) -> str:
    try:
        raw = exc.read(ANSWER_BYTES_KEPT)
    except (OSError, http.client.HTTPException):
        return ""
    return " ".join(raw.decode("utf-8", "replace").split())[:ANSWER_BYTES_KEPT]


def _without_url(text: str, url: str) -> str:
    return text.replace(url, host_of(url))


def _retry_after_s(headers: Message | None) -> float | None:
    """Retry-After in seconds: a number, or an HTTP date."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class HttpSender:
    """Sends requests in the calling thread (the notifier's own), retried as the answer
    allows, within the deadline that close() sets."""

    def __init__(
        self,
        notifier: str,
        timeout_s: float,
        max_retries: int,
        deadline: Callable[[], float | None],
        transport: Callable[[HttpRequest, float], HttpAnswer] = send_once,
    ) -> None:
        self._timeout_s = timeout_s
        self._max_retries = max_retries
        self._deadline = deadline  # None until close(); then the monotonic time to give up
        self._transport = transport
        self._refused: str | None = None
        self._log = structlog.get_logger(notifier=notifier)
        self.sent = 0
        self.failed = 0

    def send(self, what: str, request: HttpRequest) -> bool:
        ok = self._send(what, request)
        if ok:
            self.sent += 1
        else:
            self.failed += 1
        return ok

    def _send(self, what: str, request: HttpRequest) -> bool:
        for attempt in range(self._max_retries + 1):
            left = self._time_left()
            if self._refused is not None or (left is not None and left <= 0):
                reason = self._refused or "the close deadline passed"
                self._log.warning(NOTIFY_FAILED, what=what, reason=f"not sent: {reason}")
                return False
            timeout = self._timeout_s if left is None else min(self._timeout_s, left)
            answer = self._transport(request, timeout)
            if answer.ok:
                self._log.info(NOTIFY_SENT, what=what, attempts=attempt + 1)
                return True
            if answer.status in REFUSED:
                self._refused = f"{answer.reason}; nothing more is sent"
            delay = retry_delay_s(answer, attempt)
            if delay is None or attempt == self._max_retries:
                self._log.warning(
                    NOTIFY_FAILED, what=what, reason=answer.reason, attempts=attempt + 1
                )
                return False
            self._log.warning(
                NOTIFY_RETRY,
                what=what,
                attempt=attempt + 1,
                delay_s=round(delay, 3),
                reason=answer.reason,
            )
            if not self._sleep(delay):
                self._log.warning(
                    NOTIFY_FAILED,
                    what=what,
                    attempts=attempt + 1,
                    reason=f"{answer.reason}; the close deadline passed while waiting to retry",
                )
                return False
        return False

    def _time_left(self) -> float | None:
        deadline = self._deadline()
        return None if deadline is None else deadline - time.monotonic()

    def _sleep(self, seconds: float) -> bool:
        """Wait; False as soon as the close deadline would pass first."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            deadline = self._deadline()
            if deadline is not None and end > deadline:
                return False
            time.sleep(min(left, SLEEP_STEP_S))
        return True
