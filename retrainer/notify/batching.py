"""Failure alerts, batched: one message per short window, escalated on a systemic failure.

The first failure opens a window of `window_s`; every failure inside it joins the same
message, sent when the window closes. When the failures of the run reach `escalate_share`
of the symbols to train, the pending batch goes out at once as an escalation (once a run):
a broken data feed or a bad deploy must be noticed, not buried in per-symbol noise.
Time is passed in, so the logic is tested without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from retrainer.notify.messages import failures_text


@dataclass
class FailureBatcher:
    window_s: float
    escalate_share: float
    to_run: int = 0
    failed_total: int = 0
    escalated: bool = False
    _pending: list[tuple[str, str]] = field(default_factory=list)
    _due_at: float | None = None
    _escalate_now: bool = False

    def add(self, symbol: str, reason: str, now: float) -> None:
        self._pending.append((symbol, reason))
        self.failed_total += 1
        if self._due_at is None:
            self._due_at = now + self.window_s
        if (
            not self.escalated
            and self.to_run
            and (self.failed_total / self.to_run >= self.escalate_share)
        ):
            self._escalate_now = True

    def due_at(self) -> float | None:
        """When the pending batch must go out (now, if escalating); None when none is."""
        if not self._pending:
            return None
        return float("-inf") if self._escalate_now else self._due_at

    def take(self, now: float) -> str | None:
        """The message to send now, if a batch is due; the batch is then emptied."""
        due = self.due_at()
        if due is None or due > now:
            return None
        return self.take_all()

    def take_all(self) -> str | None:
        """Whatever is pending, due or not (the run is closing)."""
        if not self._pending:
            return None
        text = failures_text(self._pending, self.failed_total, self.to_run, self._escalate_now)
        self.escalated = self.escalated or self._escalate_now
        self._pending, self._due_at, self._escalate_now = [], None, False
        return text

    def discard(self) -> int:
        """Drop the pending batch (the run's summary lists every failure anyway)."""
        dropped = len(self._pending)
        self._pending, self._due_at, self._escalate_now = [], None, False
        return dropped
