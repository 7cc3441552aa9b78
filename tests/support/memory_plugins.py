"""A trainer whose memory is known: each symbol allocates and touches a chosen number of
MB, holds it for a while, and reports what it held.

    [trainer]
    plugin = "tests.support.memory_plugins:allocating"
    [trainer.params]
    alloc_mb = { AAA = 200, BBB = 50 }  # per symbol (default: default_mb)
    default_mb = 0
    hold_s = 1.0
"""

from __future__ import annotations

import time
from typing import Any

from retrainer.training.contract import TrainContext


def allocating(ctx: TrainContext) -> dict[str, Any]:
    mb = int(dict(ctx.params.get("alloc_mb", {})).get(ctx.symbol, ctx.params.get("default_mb", 0)))
    held = bytearray(mb * 2**20)
    for offset in range(0, len(held), 4096):  # touched: resident, not just reserved
        held[offset] = 1
    time.sleep(float(ctx.params.get("hold_s", 1.0)))
    (ctx.out_dir / "model.bin").write_bytes(ctx.symbol.encode() * 10)
    return {"symbol": ctx.symbol, "allocated_mb": mb}


allocating.preload_modules = ()  # type: ignore[attr-defined]
