"""Drivers decide WHERE attempts run. They never touch the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from retrainer.engine.supervisor import AttemptLimits, Supervisor
from retrainer.engine.worker import AttemptSpec


class Driver(Protocol):
    def start(self) -> None:
        """Get ready to run attempts (e.g. start a preloaded zygote)."""

    def keep_warm(self, count: int, wait_s: float = 0.0) -> bool:
        """Keep count attempts' processes prepared ahead of need. Waits up to wait_s for
        them; True when no more waiting helps (all are ready, or preparing fails)."""

    def submit(self, spec: AttemptSpec, limits: AttemptLimits) -> Supervisor:
        """Start one attempt and hand back the supervisor that owns it."""

    def wait(self, running: Sequence[Supervisor], timeout_s: float) -> None:
        """Block until one of the attempts has news (its end, then its exit status) or
        the timeout passes."""

    def close(self) -> None: ...


def make_driver(name: str, preload: Sequence[str], threads: int = 1) -> Driver:
    if name == "local":
        from retrainer.engine.drivers.local import LocalDriver

        return LocalDriver(preload, threads)
    raise ValueError(f"unknown driver {name!r}")
