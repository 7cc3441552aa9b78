"""Synthetic hourly OHLCV bars and a TrainContext for the trainer's tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrainer.base.costs import SymbolCosts
from retrainer.training.contract import EventSink, TrainContext

# Small enough for a test to train in well under a second.
TINY_PARAMS: dict[str, Any] = {
    "hidden_sizes": [8, 4],
    "max_epochs": 5,
    "patience_epochs": 2,
    "batch_size": 128,
}


def make_bars(rows: int = 1500, seed: int = 7) -> pd.DataFrame:
    """A random walk with a little momentum, so the model has something to find."""
    rng = np.random.default_rng(seed)
    shocks = rng.normal(0.0, 0.01, rows)
    returns = np.empty(rows)
    returns[0] = shocks[0]
    for t in range(1, rows):
        returns[t] = 0.1 * returns[t - 1] + shocks[t]
    close = 100.0 * np.exp(np.cumsum(returns))
    open_ = np.concatenate([[100.0], close[:-1]])
    wiggle = np.abs(rng.normal(0.0, 0.004, rows))
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC"),
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wiggle),
            "low": np.minimum(open_, close) * (1 - wiggle),
            "close": close,
            "volume": rng.lognormal(10.0, 0.5, rows),
        }
    )


def make_costs(symbol: str = "TESTUSDT") -> SymbolCosts:
    return SymbolCosts(
        symbol, taker_fee_bps=10.0, maker_fee_bps=2.0, half_spread_bps=1.5, spread_bars=500
    )


class EventLog:
    """Collects ctx.emit calls."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, **fields: Any) -> None:
        self.events.append((event, fields))

    def artifacts(self, event: str) -> list[str]:
        return [str(f["artifact"]) for e, f in self.events if e == event]


def make_context(
    out_dir: Path,
    bars: pd.DataFrame | None = None,
    params: dict[str, Any] | None = None,
    reuse_dir: Path | None = None,
    emit: EventSink | None = None,
    seed: int = 42,
    partial_key: str = "key-1",
) -> TrainContext:
    out_dir.mkdir(parents=True, exist_ok=True)
    extra: dict[str, Any] = {} if emit is None else {"emit": emit}
    return TrainContext(
        symbol="TESTUSDT",
        data_source=(lambda: make_bars() if bars is None else bars),
        costs=make_costs(),
        out_dir=out_dir,
        seed=seed,
        device="cpu",
        threads=1,
        params=dict(TINY_PARAMS if params is None else params),
        partial_key_source=lambda: partial_key,
        reuse_dir=reuse_dir,
        **extra,
    )
