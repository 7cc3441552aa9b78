"""Trainer plug-ins for benchmarks and tests: "bench.trainers:noop", ":cpu", ":sleep".

The work itself lives in bench.workloads, so that the peers run exactly the same code.
"""

from __future__ import annotations

from typing import Any

from bench.workloads import cpu_work, noop_work, sleep_work
from retrainer.training.contract import TrainContext


def noop(ctx: TrainContext) -> dict[str, Any]:
    """Returns at once: what is left is the scheduler's own cost."""
    return {"symbol": ctx.symbol, "value": noop_work()}


def cpu(ctx: TrainContext) -> dict[str, Any]:
    """A fixed single-threaded pure-Python loop, about 0.25 s."""
    return {"symbol": ctx.symbol, "value": cpu_work()}


def sleep(ctx: TrainContext) -> dict[str, Any]:
    """0.2 s of waiting, as for I/O or a GPU kernel."""
    return {"symbol": ctx.symbol, "value": sleep_work()}


# They need no heavy module: the forkserver preloads only retrainer's worker.
for _trainer in (noop, cpu, sleep):
    _trainer.preload_modules = ()  # type: ignore[attr-defined]
