"""A tiny trainer with a `load` hook, for the tests of loading models.

    [trainer]
    plugin = "tests.support.loadable_plugins:train"

Its model is the share of rising closes in the bars it was trained on, kept in model.bin;
`train.load(folder)` reads it back from the folder alone, as a real trainer's hook reads
its weights, and the loaded model's `predict_proba(bars)` gives that share for every bar.
`without_load` makes the same folders and offers no hook.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrainer.training.contract import TrainContext


def train(ctx: TrainContext) -> dict[str, Any]:
    close = ctx.data["close"].to_numpy(np.float64)
    p_up = float(np.mean(np.diff(close) > 0))
    (ctx.out_dir / "model.bin").write_text(json.dumps({"symbol": ctx.symbol, "p_up": p_up}))
    (ctx.out_dir / "config.json").write_text(json.dumps({"symbol": ctx.symbol}))
    return {"test_log_loss": float(ctx.params.get("log_loss", 0.69)), "p_up": p_up}


@dataclass(frozen=True)
class TinyModel:
    folder: Path
    symbol: str
    p_up: float
    metrics: dict[str, Any]

    def predict_proba(self, bars: pd.DataFrame) -> pd.Series:
        return pd.Series(self.p_up, index=bars.index, name="p_up")


def load(folder: Path) -> TinyModel:
    model = json.loads((folder / "model.bin").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    return TinyModel(folder, str(model["symbol"]), float(model["p_up"]), metrics)


train.load = load  # type: ignore[attr-defined]
train.preload_modules = ()  # type: ignore[attr-defined]


def without_load(ctx: TrainContext) -> dict[str, Any]:
    return train(ctx)


without_load.preload_modules = ()  # type: ignore[attr-defined]
