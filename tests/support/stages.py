"""A two-stage trainer for tests: `prepare` saves a partial output, `train` reuses it.

    [trainer]
    plugin = "tests.support.stages:staged"
    [trainer.params]
    marker_dir = "/tmp/markers"
    behaviours = { BTCUSDT = "prepare_fails_once", ETHUSDT = "train_fails_once" }

With one stage, `staged` builds the partial itself (`reused` false in its metrics).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from retrainer.training.contract import TrainContext

FEATURES = "features.bin"


def _fails_once(ctx: TrainContext, stage: str) -> None:
    behaviour = dict(ctx.params.get("behaviours", {})).get(ctx.symbol, "ok")
    if behaviour != f"{stage}_fails_once":
        return
    marker = Path(str(ctx.params["marker_dir"])) / f"{ctx.symbol}.{stage}.failed-once"
    marker.parent.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        marker.write_text("1")
        raise RuntimeError(f"the first {stage} fails")


def _features(ctx: TrainContext) -> bytes:
    return f"features of {ctx.symbol}".encode()


def prepare(ctx: TrainContext) -> None:
    _fails_once(ctx, "prepare")
    ctx.save_partial(FEATURES, _features(ctx))


def staged(ctx: TrainContext) -> dict[str, Any]:
    reused = ctx.reuse_partial(FEATURES)
    if reused is None:
        ctx.save_partial(FEATURES, _features(ctx))
    _fails_once(ctx, "train")
    time.sleep(float(ctx.params.get("train_s", 0.0)))
    (ctx.out_dir / "model.bin").write_bytes(ctx.symbol.encode() * 100)
    return {"symbol": ctx.symbol, "value": 1.0, "reused": reused is not None}


staged.prepare = prepare  # type: ignore[attr-defined]
