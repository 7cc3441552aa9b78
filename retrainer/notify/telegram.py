"""The Telegram notifier: python-telegram-bot, sent from a background thread.

The run only ever puts a job on a queue, so a slow, hanging or broken Bot API server
cannot slow a training item. The notifier's own thread runs an asyncio event loop for the
(async) Bot; each request has a timeout, 429 waits for its `retry_after`, 5xx and network
errors are retried with a short backoff, a bounded number of times; 401/403/404 (a wrong
token or chat) stop further sends. `close()` waits at most `close_timeout_s`: past that
deadline nothing more is tried, and whatever is left is logged as not sent.

The Bot API address is `api_url` (a self-hosted Bot API server, or our tests' server).
The token is a secret: it is scrubbed from every message this module logs, and the
HTTP libraries' own loggers (whose lines carry the URL, so the token) are kept quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import functools
import json
import logging
import os
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from retrainer.base.config import NotifySettings
from retrainer.base.logs import MASK
from retrainer.base.optional import import_optional
from retrainer.notify.batching import FailureBatcher
from retrainer.notify.credentials import TelegramCredentials, load_credentials
from retrainer.notify.messages import (
    finished_text,
    items_that_can_fail,
    split_text,
    started_text,
)
from retrainer.notify.protocol import NOTIFY_CLOSED, NOTIFY_FAILED, NOTIFY_RETRY, NOTIFY_SENT

RETRY_BASE_S = 0.5
RETRY_CAP_S = 8.0
SLEEP_STEP_S = 0.1  # waits are sliced, so that the close deadline is seen promptly
_CLOSE = object()


@dataclass(frozen=True)
class _Text:
    what: str
    text: str


@dataclass(frozen=True)
class _Failure:
    symbol: str
    reason: str
    at: float  # monotonic: the batch window counts from the failure, not from its handling


@dataclass(frozen=True)
class _Started:
    info: Mapping[str, Any]


@dataclass(frozen=True)
class _Finished:
    summary: Mapping[str, Any]


class TelegramNotifier:
    def __init__(
        self, options: Mapping[str, Any], environ: Mapping[str, str] | None = None
    ) -> None:
        self.settings = NotifySettings.model_validate(dict(options))
        credentials = load_credentials(self.settings.secrets_file, environ)
        self._sender = _BotSender(credentials, self.settings, lambda: self._deadline)
        self._queue: queue.Queue[object] = queue.Queue()
        self._batcher = FailureBatcher(self.settings.batch_window_s, self.settings.escalate_share)
        self._deadline: float | None = None
        self._log = structlog.get_logger(notifier="telegram")
        # The thread logs with the run's bound context (run_id) as it was when built.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._serve,), name="retrainer-notify", daemon=True
        )
        self._thread.start()

    # -- the Notifier protocol: called by the run, never blocks it -------------------------
    def run_started(self, info: Mapping[str, Any]) -> None:
        self._queue.put(_Started(dict(info)))

    def item_failed(self, symbol: str, reason: str) -> None:
        self._queue.put(_Failure(symbol, reason, time.monotonic()))

    def run_finished(self, summary: Mapping[str, Any]) -> None:
        self._queue.put(_Finished(dict(summary)))

    def close(self) -> None:
        """Send what is pending, waiting at most close_timeout_s."""
        if not self._thread.is_alive():
            return
        self._deadline = time.monotonic() + self.settings.close_timeout_s
        self._queue.put(_CLOSE)
        self._thread.join(self.settings.close_timeout_s + 1.0)
        if self._thread.is_alive():
            self._log.warning(
                NOTIFY_FAILED,
                what="close",
                reason=f"still busy after {self.settings.close_timeout_s} s; left behind",
            )

    # -- the notifier's thread -----------------------------------------------------------
    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        counts = {"sent": 0, "failed": 0}
        try:
            while True:
                job = self._next_job()
                if job is _CLOSE:
                    break
                for what, text in self._texts_for(job):
                    ok = loop.run_until_complete(self._sender.send_text(what, text))
                    counts["sent" if ok else "failed"] += 1
                if isinstance(job, _Finished) and self.settings.attach_summary:
                    ok = loop.run_until_complete(self._sender.send_summary(job.summary))
                    counts["sent" if ok else "failed"] += 1
            pending = self._batcher.take_all()
            if pending is not None:
                ok = loop.run_until_complete(self._sender.send_text("failures", pending))
                counts["sent" if ok else "failed"] += 1
        except Exception as exc:  # a bug here must never reach the run
            self._log.error(NOTIFY_FAILED, what="notifier", reason=self._sender.scrub(exc))
        finally:
            loop.run_until_complete(self._sender.close())
            loop.close()
            self._log.info(NOTIFY_CLOSED, **counts)

    def _next_job(self) -> object:
        """The next queued job; a due failure batch becomes a job of its own."""
        while True:
            due = self._batcher.due_at()
            timeout = None if due is None else max(0.0, due - time.monotonic())
            try:
                return self._queue.get(timeout=timeout)
            except queue.Empty:
                text = self._batcher.take(time.monotonic())
                if text is not None:
                    return _Text("failures", text)

    def _texts_for(self, job: object) -> list[tuple[str, str]]:
        if isinstance(job, _Text):
            return [(job.what, job.text)]
        if isinstance(job, _Started):
            self._batcher.to_run = items_that_can_fail(job.info)
            return [("run_started", started_text(job.info))]
        if isinstance(job, _Failure):
            self._batcher.add(job.symbol, job.reason, job.at)
            text = self._batcher.take(time.monotonic())  # due at once when escalating
            return [] if text is None else [("failures", text)]
        if isinstance(job, _Finished):
            self._batcher.discard()  # the summary lists every failure with its reason
            return [("run_finished", finished_text(job.summary))]
        return []


class _BotSender:
    """One Bot, its requests, and the retry policy. Runs inside the notifier's thread."""

    def __init__(
        self,
        credentials: TelegramCredentials,
        settings: NotifySettings,
        deadline: Callable[[], float | None],
    ) -> None:
        telegram = import_optional("telegram", "telegram")
        from telegram.request import HTTPXRequest

        # The Bot API and the HTTP libraries log request URLs, which hold the token.
        for name in ("telegram", "httpx", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        # Opt in to python-telegram-bot's future API (retry_after as a timedelta) rather
        # than have it warn about the old one on every 429.
        os.environ.setdefault("PTB_TIMEDELTA", "true")
        self._token = credentials.token
        self._chat_id = credentials.chat_id
        self._settings = settings
        self._deadline = deadline  # None until close(); then the monotonic time to give up
        self._broken: str | None = None
        timeout = settings.request_timeout_s
        api_url = settings.api_url.rstrip("/")
        self._requests = [
            HTTPXRequest(
                connection_pool_size=2,
                read_timeout=timeout,
                write_timeout=timeout,
                connect_timeout=timeout,
                pool_timeout=timeout,
                media_write_timeout=timeout,
            )
            for _ in range(2)  # python-telegram-bot wants its own one for getUpdates
        ]
        self._bot = telegram.Bot(
            credentials.token,
            base_url=f"{api_url}/bot",
            base_file_url=f"{api_url}/file/bot",
            request=self._requests[0],
            get_updates_request=self._requests[1],
        )
        self._errors = telegram.error
        self._log = structlog.get_logger(notifier="telegram")

    async def send_text(self, what: str, text: str) -> bool:
        parts = split_text(text)
        for number, part in enumerate(parts, start=1):
            label = what if len(parts) == 1 else f"{what} {number}/{len(parts)}"
            call = functools.partial(self._bot.send_message, chat_id=self._chat_id, text=part)
            if not await self._send(label, call):
                return False
        return True

    async def send_summary(self, summary: Mapping[str, Any]) -> bool:
        body = json.dumps(summary, indent=2, default=str).encode("utf-8")
        call = functools.partial(
            self._bot.send_document,
            chat_id=self._chat_id,
            document=body,
            filename=f"engine_summary_{summary.get('day', 'run')}.json",
            caption=f"engine_summary.json of run {summary.get('run_id', '?')}",
        )
        return await self._send("summary_document", call)

    async def _send(self, what: str, call: Callable[[], Awaitable[Any]]) -> bool:
        """One request, retried as the error allows, within the close deadline."""
        retries = self._settings.max_retries
        for attempt in range(retries + 1):
            if self._broken is not None or self._past_deadline():
                reason = self._broken or "the close deadline passed"
                self._log.warning(NOTIFY_FAILED, what=what, reason=f"not sent: {reason}")
                return False
            try:
                await self._bounded(call)
            except Exception as exc:
                delay, reason = self._classify(exc, attempt)
                if delay is None or attempt == retries:
                    self._log.warning(NOTIFY_FAILED, what=what, reason=reason, attempts=attempt + 1)
                    return False
                self._log.warning(
                    NOTIFY_RETRY,
                    what=what,
                    attempt=attempt + 1,
                    delay_s=round(delay, 3),
                    reason=reason,
                )
                if not await self._sleep(delay):
                    self._log.warning(
                        NOTIFY_FAILED,
                        what=what,
                        attempts=attempt + 1,
                        reason=f"{reason}; the close deadline passed while waiting to retry",
                    )
                    return False
            else:
                self._log.info(NOTIFY_SENT, what=what, attempts=attempt + 1)
                return True
        return False

    def _classify(self, exc: Exception, attempt: int) -> tuple[float | None, str]:
        """(seconds to wait before retrying, or None for no retry; the reason, scrubbed).
        A refused token or chat also marks the sender broken: nothing later can succeed."""
        errors = self._errors
        reason = self.scrub(exc)
        if isinstance(exc, errors.RetryAfter):
            return _seconds(exc.retry_after), f"rate limited (429): {reason}"
        if isinstance(exc, errors.InvalidToken | errors.Forbidden):
            self._broken = f"the Bot API refused the token or chat ({reason})"
            return None, self._broken
        if isinstance(exc, errors.BadRequest | errors.ChatMigrated):
            return None, f"bad request: {reason}"
        if isinstance(exc, errors.NetworkError | TimeoutError):
            return min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt), reason
        return None, reason

    def _past_deadline(self) -> bool:
        deadline = self._deadline()
        return deadline is not None and time.monotonic() >= deadline

    async def _bounded(self, call: Callable[[], Awaitable[Any]]) -> None:
        """Await one request; cancel it at its timeout, or at the close deadline, which
        close() may set while the request is in flight."""
        task = asyncio.ensure_future(call())
        # python-telegram-bot bounds connect, write and read apart; this bounds them together.
        end = time.monotonic() + self._settings.request_timeout_s * 2
        try:
            while not task.done():
                deadline = self._deadline()
                left = (end if deadline is None else min(end, deadline)) - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no answer in time")
                await asyncio.wait({task}, timeout=min(left, SLEEP_STEP_S))
            task.result()
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _sleep(self, seconds: float) -> bool:
        """Wait; False as soon as the close deadline would pass first."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            deadline = self._deadline()
            if deadline is not None and end > deadline:
                return False
            await asyncio.sleep(min(left, SLEEP_STEP_S))
        return True

    def scrub(self, exc: BaseException) -> str:
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return text.replace(self._token, MASK)

    async def close(self) -> None:
        for request in self._requests:
            try:
                await request.shutdown()
            except Exception as exc:  # closing a broken connection must not raise
                self._log.debug(NOTIFY_FAILED, what="shutdown", reason=self.scrub(exc))


def _seconds(value: int | float | dt.timedelta) -> float:
    return value.total_seconds() if isinstance(value, dt.timedelta) else float(value)
