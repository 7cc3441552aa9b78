"""A trainer's `warm_up` hook: one tiny fit, run once in the zygote that forks the attempts.

A forked attempt inherits the zygote's imported modules but not what their first call
builds (torch's kernels and allocator, pandas' rolling windows, pyarrow's writers): a
backtest's window paid for it in each of its processes (72 ms for its first window in a
process, 38 ms for the next ones: docs/benchmarks.md). The zygote runs the trainer once,
nightly and on one window, on synthetic bars in a temporary folder; its RNG state is
restored by the trainer's own seeding (model.deterministic_torch).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrainer.base.clock import iso
from retrainer.base.costs import SymbolCosts
from retrainer.training.contract import TrainContext, Trainer
from retrainer.training.forecasts import ForecastWindow

_BARS = 640
_TRAIN_LAST = 520


def synthetic_bars(rows: int = _BARS) -> pd.DataFrame:
    """Hourly OHLCV bars of a seeded random walk (its own generator: no global state)."""
    rng = np.random.default_rng(0)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, rows)))
    opened = np.r_[close[0], close[:-1]]
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2026-01-01", periods=rows, freq="h", tz="UTC"),
            "open": opened,
            "high": np.maximum(opened, close) * 1.001,
            "low": np.minimum(opened, close) * 0.999,
            "close": close,
            "volume": np.full(rows, 1000.0),
        }
    )


def warm_trainer(train: Trainer, params: Mapping[str, Any]) -> None:
    """`train` once as a nightly item and once on a window, with these (small) params."""
    bars = synthetic_bars()
    stamps = bars["timestamp"]
    window = ForecastWindow(
        index=0,
        train_first=iso(stamps.iloc[0].to_pydatetime()),
        train_last=iso(stamps.iloc[_TRAIN_LAST - 1].to_pydatetime()),
        forecast_first=iso(stamps.iloc[_TRAIN_LAST].to_pydatetime()),
        forecast_last=iso(stamps.iloc[-1].to_pydatetime()),
        embargo_bars=0,
        train_bars=_TRAIN_LAST,
        forecast_bars=len(bars) - _TRAIN_LAST,
    )
    costs = SymbolCosts("WARMUP", 10.0, 2.0, 1.0, 100)
    for window_or_none in (None, window):
        with tempfile.TemporaryDirectory(prefix="retrainer-warm-") as folder:
            train(
                TrainContext(
                    symbol="WARMUP",
                    data_source=lambda: bars,
                    costs=costs,
                    out_dir=Path(folder),
                    seed=0,
                    device="cpu",
                    threads=1,
                    params=params,
                    window=window_or_none,
                )
            )
