"""A notifier that works from its own thread: the run only ever puts a job on a queue.

`ThreadedNotifier` implements the Notifier protocol for the notifiers that send over HTTP
(webhook, healthchecks pings, Prometheus): run_started / item_failed / run_finished queue
a job and return at once; the notifier's thread handles the jobs in order (`handle`), and
a job that raises is logged, never raised. A notifier may ask to be woken at a time of its
own (`due_at` / `on_due`: a failure batch whose window closed). `close()` lets the thread
finish what is queued (`finish`), waiting at most close_timeout_s; the deadline it sets is
what the notifier's requests and waits respect, and past it the thread is left behind
(a daemon: it never holds the process).
"""

from __future__ import annotations

import contextvars
import functools
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from retrainer.notify.protocol import NOTIFY_CLOSED, NOTIFY_FAILED

_CLOSE = object()


@dataclass(frozen=True)
class Started:
    info: Mapping[str, Any]
    at: float  # time.time() when the run said so: the queue may hold it a moment


@dataclass(frozen=True)
class Failure:
    symbol: str
    reason: str
    at: float  # monotonic: a batch window counts from the failure, not from its handling


@dataclass(frozen=True)
class Finished:
    summary: Mapping[str, Any]
    at: float  # time.time()


Job = Started | Failure | Finished


class ThreadedNotifier:
    """Subclasses set themselves up, then call `_start()`; they implement `handle` and,
    if they need them, `due_at`, `on_due` and `finish`."""

    def __init__(self, name: str, close_timeout_s: float) -> None:
        self.name = name
        self.close_timeout_s = close_timeout_s
        self._queue: queue.Queue[object] = queue.Queue()
        self._deadline: float | None = None
        self.log = structlog.get_logger(notifier=name)
        # The thread logs with the run's bound context (run_id) as it was when built.
        context = contextvars.copy_context()
        self._thread = threading.Thread(
            target=context.run, args=(self._serve,), name=f"retrainer-{name}", daemon=True
        )

    def _start(self) -> None:
        self._thread.start()

    def deadline(self) -> float | None:
        """None until close(); then the monotonic time past which nothing is tried."""
        return self._deadline

    # -- the Notifier protocol: called by the run, never blocks it -------------------------
    def run_started(self, info: Mapping[str, Any]) -> None:
        self._queue.put(Started(dict(info), time.time()))

    def item_failed(self, symbol: str, reason: str) -> None:
        self._queue.put(Failure(symbol, reason, time.monotonic()))

    def run_finished(self, summary: Mapping[str, Any]) -> None:
        self._queue.put(Finished(dict(summary), time.time()))

    def close(self) -> None:
        """Handle what is queued, waiting at most close_timeout_s."""
        if not self._thread.is_alive():
            return
        self._deadline = time.monotonic() + self.close_timeout_s
        self._queue.put(_CLOSE)
        self._thread.join(self.close_timeout_s + 1.0)
        if self._thread.is_alive():
            self.log.warning(
                NOTIFY_FAILED,
                what="close",
                reason=f"still busy after {self.close_timeout_s} s; left behind",
            )

    # -- for subclasses ----------------------------------------------------------------
    def handle(self, job: Job) -> None:
        raise NotImplementedError

    def due_at(self) -> float | None:
        """The monotonic time to call on_due at (None: no such time)."""
        return None

    def on_due(self) -> None:
        return None

    def finish(self) -> None:
        """After the last job, before the thread ends: send what is still pending."""
        return None

    def counts(self) -> dict[str, int]:
        """What notify_closed reports."""
        return {}

    # -- the notifier's thread -----------------------------------------------------------
    def _serve(self) -> None:
        while True:
            job = self._next_job()
            if job is _CLOSE:
                break
            self._guarded(self.on_due if job is None else functools.partial(self.handle, job))
        self._guarded(self.finish)
        self.log.info(NOTIFY_CLOSED, **self.counts())

    def _guarded(self, step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as exc:  # a bug here must never reach the run
            self.log.error(NOTIFY_FAILED, what="notifier", reason=f"{type(exc).__name__}: {exc}")

    def _next_job(self) -> Any:
        """The next queued job, or None when due_at has come."""
        due = self.due_at()
        timeout = None if due is None else max(0.0, due - time.monotonic())
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
