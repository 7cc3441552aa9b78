"""Several observers of a night as one notifier: the chat notifier of [notify], the
healthchecks pinger, the Prometheus exporter.

Each call goes to every observer in turn; an observer that raises is logged
(`notify_failed`, naming it) and never keeps the call from the others. `close()` closes
them all at once, each in a thread of its own, so the run waits for the slowest observer's
bounded close, not for the sum of them.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from retrainer.notify.protocol import NOTIFY_FAILED, Notifier

# Past every observer's own close bound: only a bug waits this long, and is left behind.
CLOSE_GRACE_S = 5.0


class FanOut:
    def __init__(
        self,
        observers: Sequence[tuple[str, Notifier]],
        close_bound_s: float,
        grace_s: float = CLOSE_GRACE_S,
    ) -> None:
        """close_bound_s: the longest close_timeout_s of the observers."""
        self.observers = list(observers)
        self._close_bound_s = close_bound_s + grace_s
        self._log = structlog.get_logger()

    def run_started(self, info: Mapping[str, Any]) -> None:
        for name, observer in self.observers:
            self._guarded(name, "run_started", functools.partial(observer.run_started, info))

    def item_failed(self, symbol: str, reason: str) -> None:
        for name, observer in self.observers:
            call = functools.partial(observer.item_failed, symbol, reason)
            self._guarded(name, "item_failed", call)

    def run_finished(self, summary: Mapping[str, Any]) -> None:
        for name, observer in self.observers:
            self._guarded(name, "run_finished", functools.partial(observer.run_finished, summary))

    def close(self) -> None:
        threads = []
        for name, observer in self.observers:
            context = contextvars.copy_context()
            thread = threading.Thread(
                target=context.run,
                args=(self._guarded, name, "close", observer.close),
                name=f"retrainer-close-{name}",
                daemon=True,
            )
            thread.start()
            threads.append((name, thread))
        end = time.monotonic() + self._close_bound_s
        for name, thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
            if thread.is_alive():
                self._log.warning(
                    NOTIFY_FAILED,
                    notifier=name,
                    what="close",
                    reason=f"still closing after {self._close_bound_s} s; left behind",
                )

    def _guarded(self, name: str, what: str, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception as exc:  # one observer's bug never reaches the run or the others
            self._log.error(
                NOTIFY_FAILED, notifier=name, what=what, reason=f"{type(exc).__name__}: {exc}"
            )
