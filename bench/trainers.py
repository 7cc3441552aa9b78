"""Trainer plug-ins for benchmarks and tests ("bench.trainers:noop" and friends)."""

from __future__ import annotations

import time
from typing import Any

from retrainer.training.contract import TrainContext

CPU_LOOP_ITERATIONS = 2_000_000  # about 0.25 s of pure Python on one core here


def noop(ctx: TrainContext) -> dict[str, Any]:
    """Returns at once: what is left is the scheduler's own cost."""
    return {"symbol": ctx.symbol}


def cpu(ctx: TrainContext) -> dict[str, Any]:
    """A fixed single-threaded pure-Python loop."""
    started = time.perf_counter()
    total = 0
    for i in range(CPU_LOOP_ITERATIONS):
        total += i & 7
    return {"symbol": ctx.symbol, "checksum": total, "seconds": time.perf_counter() - started}


def sleep(ctx: TrainContext) -> dict[str, Any]:
    """0.2 s of waiting, as for I/O or a GPU kernel."""
    time.sleep(0.2)
    return {"symbol": ctx.symbol}
