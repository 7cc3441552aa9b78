"""Item events and their listeners: how outward traffic (uploads, notifications, metrics)
hears about items without living inside the loop.

The engine calls every listener from its own thread, in order. A listener must not block
(hand slow work to a thread of its own) and never fails an item: an exception it raises is
logged and the loop goes on.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import structlog


class ItemListener:
    """Hears about items as the engine moves them; every method does nothing by default."""

    def attempt_started(self, item_id: str, out_dir: Path) -> None:
        """An attempt was handed over; it writes into out_dir."""

    def attempt_ended(self, item_id: str, out_dir: Path) -> None:
        """The attempt's process is gone (its outcome follows)."""

    def item_succeeded(self, item_id: str, out_dir: Path, files: Sequence[Path]) -> None:
        """Recorded as a success: files are its verified artifacts and manifest."""

    def item_failed(self, item_id: str, reason: str) -> None:
        """Recorded as failed for good: no retry follows."""

    def poll(self) -> None:
        """Once per pass of the loop: collect what finished meanwhile."""

    def drain(self) -> None:
        """The loop is over: wait for what is in flight before the summary is written."""


class Listeners(ItemListener):
    """Fans each event out to every listener; one that raises is logged and skipped."""

    def __init__(self, listeners: Iterable[ItemListener] = ()) -> None:
        self._listeners = list(listeners)
        self._log = structlog.get_logger()

    def attempt_started(self, item_id: str, out_dir: Path) -> None:
        self._each("attempt_started", item_id, out_dir)

    def attempt_ended(self, item_id: str, out_dir: Path) -> None:
        self._each("attempt_ended", item_id, out_dir)

    def item_succeeded(self, item_id: str, out_dir: Path, files: Sequence[Path]) -> None:
        self._each("item_succeeded", item_id, out_dir, files)

    def item_failed(self, item_id: str, reason: str) -> None:
        self._each("item_failed", item_id, reason)

    def poll(self) -> None:
        self._each("poll")

    def drain(self) -> None:
        self._each("drain")

    def _each(self, event: str, *args: object) -> None:
        for listener in self._listeners:
            try:
                getattr(listener, event)(*args)
            except Exception as exc:  # a listener never fails an item or the loop
                self._log.error(
                    "listener_failed",
                    listener=type(listener).__name__,
                    hook=event,  # not `event=`: that is the log event's own name
                    error_type=type(exc).__name__,
                    reason=str(exc),
                )
