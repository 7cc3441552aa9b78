"""Trainer plug-ins for benchmarks and tests: "bench.trainers:noop", ":cpu", ":sleep",
":heavy_tailed", ":staged".

The work itself lives in bench.workloads, so that the peers run exactly the same code.
"""

from __future__ import annotations

import random
import time
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


def heavy_tailed_s(
    symbol: str, seed: int = 15, xm_s: float = 0.3, alpha: float = 1.2, cap_s: float = 8.0
) -> float:
    """A symbol's duration, the same night after night: Pareto (xm_s, alpha), capped. Most
    symbols take a fraction of a second, a few take many times the typical one."""
    rng = random.Random(f"{seed}:{symbol}")  # a str seed: the same in every process
    return min(cap_s, xm_s * rng.paretovariate(alpha))


def heavy_tailed(ctx: TrainContext) -> dict[str, Any]:
    """Waits for heavy_tailed_s(symbol) (params: seed, xm_s, alpha, cap_s)."""
    params = {k: ctx.params[k] for k in ("seed", "xm_s", "alpha", "cap_s") if k in ctx.params}
    seconds = heavy_tailed_s(ctx.symbol, **params)
    time.sleep(seconds)
    return {"symbol": ctx.symbol, "value": seconds}


def staged_prepare(ctx: TrainContext) -> None:
    """The CPU stage: prepare_s of feature building (a wait), saved as a partial output."""
    time.sleep(float(ctx.params.get("prepare_s", 1.0)))
    ctx.save_partial("features.bin", ctx.symbol.encode())


def staged(ctx: TrainContext) -> dict[str, Any]:
    """Two stages (bench.two_stage): features (prepare_s, reused when the prepare stage
    built them), then train_s on the "device" (a wait on the window's one slot)."""
    reused = ctx.reuse_partial("features.bin") is not None
    if not reused:
        staged_prepare(ctx)
    time.sleep(float(ctx.params.get("train_s", 0.5)))
    return {"symbol": ctx.symbol, "reused": reused}


staged.prepare = staged_prepare  # type: ignore[attr-defined]

# They need no heavy module: the forkserver preloads only retrainer's worker.
for _trainer in (noop, cpu, sleep, heavy_tailed, staged):
    _trainer.preload_modules = ()  # type: ignore[attr-defined]
