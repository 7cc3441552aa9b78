"""A light trainer for the remote-storage runs: artifacts in milliseconds, and a gate.

[trainer.params]
gate_file = "/tmp/x/open"    # symbols other than those in `free` wait for this file
free = ["BTCUSDT"]
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from retrainer.training.contract import TrainContext

GATE_TIMEOUT_S = 120.0


def gated(ctx: TrainContext) -> Any:
    ctx.save_partial("features.json", json.dumps({"symbol": ctx.symbol}).encode())
    gate = ctx.params.get("gate_file")
    if gate and ctx.symbol not in ctx.params.get("free", ()):
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not Path(str(gate)).exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    (ctx.out_dir / "model.bin").write_bytes(ctx.symbol.encode() * 5000)
    (ctx.out_dir / "config.json").write_text(json.dumps({"seed": ctx.seed}))
    return {"net_sharpe": 1.0, "rows": len(ctx.data)}
