"""What every notifier offers.

A notifier tells people about a run (a Telegram chat, later others). Implementations must
not raise when a message cannot be delivered: they log it and carry on, because a notifier
failing never fails a training item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

# What every notifier logs (with `notifier`, `what` and, on failure, a `reason`).
NOTIFY_SENT = "notify_sent"
NOTIFY_RETRY = "notify_retry"
NOTIFY_FAILED = "notify_failed"
NOTIFY_CLOSED = "notify_closed"


@runtime_checkable
class Notifier(Protocol):
    def run_started(self, info: Mapping[str, Any]) -> None:
        """The run began: info holds run_id, mode, symbols and the like."""
        ...

    def item_failed(self, symbol: str, reason: str) -> None:
        """One item ended failed for good (after its retries)."""
        ...

    def run_finished(self, summary: Mapping[str, Any]) -> None:
        """The run ended: summary is engine_summary.json's content."""
        ...

    def close(self) -> None:
        """Flush what is pending and release connections."""
        ...
