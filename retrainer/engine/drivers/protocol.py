"""The driver seam: a driver decides WHERE attempts run and hands the engine a handle per
attempt. The engine asks a handle whether its attempt has ended, what its outcome was, and
tells it to stop; it never sees a process, a node or an engine's future behind it.

Drivers never touch the ledger. The supervision policy (deadline, memory cap, killing the
whole tree, classifying the end) is the Supervisor (engine/supervisor.py), which runs on
whichever machine the attempt's process runs: the local driver's handle IS a supervisor; a
remote driver runs one on the node and hands the engine a handle that reports its result.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol

from retrainer.base.resources import Resources
from retrainer.engine.attempt import AttemptSpec
from retrainer.engine.supervisor import AttemptLimits
from retrainer.ledger.entries import Outcome


class AttemptHandle(Protocol):
    """The engine's handle on one submitted attempt, wherever it runs."""

    @property
    def pid(self) -> int | None:
        """The attempt's process id on its machine, if it has one yet."""

    @property
    def started_monotonic(self) -> float:
        """When the attempt was handed over (the head's monotonic clock): its time, and
        its deadline, count from here."""

    def has_exited(self) -> bool:
        """Its process is gone: its slot may take the next item. Never blocks."""

    def outcome_ready(self) -> bool:
        """Exited, and its outcome can be read without blocking."""

    def outcome(self) -> Outcome:
        """How it ended (once outcome_ready): success with metrics, or why not."""

    def next_wakeup(self) -> float:
        """The monotonic time at which the attempt next needs the engine's attention."""

    def enforce_limits(self, now: float) -> None:
        """Apply the deadline and the memory cap, as far as they apply at now."""

    def terminate(self) -> None:
        """Stop it: SIGTERM to its tree, SIGKILL after the grace (enforce_limits)."""

    def kill(self) -> None:
        """Stop it at once."""


class Driver(Protocol):
    def start(self) -> None:
        """Get ready to run attempts (e.g. start a preloaded zygote)."""

    def keep_warm(self, count: int, wait_s: float = 0.0) -> bool:
        """Keep count attempts' processes prepared ahead of need. Waits up to wait_s for
        them; True when no more waiting helps (all are ready, or preparing fails)."""

    def submit(self, spec: AttemptSpec, limits: AttemptLimits) -> AttemptHandle:
        """Start one attempt and hand back its handle."""

    def wait(self, running: Sequence[AttemptHandle], timeout_s: float) -> None:
        """Block until one of the attempts has news (its end, then its outcome) or the
        timeout passes."""

    def resources(self) -> Resources | None:
        """What the attempts can use: a remote driver's cluster (after start); None for
        this machine's own (the plan detects them)."""

    def helper_pids(self) -> Collection[int]:
        """The driver's own helper processes on this machine (a zygote, warm processes):
        never an orphan to sweep."""

    def close(self) -> None: ...
