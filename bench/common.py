"""Shared helpers for benchmarks: tiny data sets, timing, the results table and JSON."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retrainer.views.display import plain_table

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"


def write_tiny_universe(folder: Path, n_symbols: int, rows: int = 1100, seed: int = 1) -> list[str]:
    """Small valid hourly OHLCV files, for measuring the scheduler rather than the data."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2026-01-01", periods=rows, freq="h", tz="UTC")
    symbols = [f"S{i:05d}" for i in range(n_symbols)]
    for i, symbol in enumerate(symbols):
        close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, rows)))
        opened = np.r_[close[0], close[:-1]]
        high = np.maximum(opened, close) * 1.001
        low = np.minimum(opened, close) * 0.999
        volume = np.full(rows, 1000.0 * (i + 1))
        frame = pd.DataFrame(
            {
                "timestamp": stamps,
                "open": opened,
                "high": high,
                "low": low,
                "close": close,
                "volume": volume,
            }
        )
        frame.to_parquet(folder / f"{symbol}.parquet", index=False)
    return symbols


def summarise(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "p90": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))],
        "max": ordered[-1],
        "n": len(ordered),
    }


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """The first column left-aligned, the figures right-aligned, as the dry run's plan."""
    cells = [[_fmt(c) for c in row] for row in rows]
    print(f"\n{title}")
    print(plain_table([str(h) for h in header], cells, [i > 0 for i in range(len(header))]), end="")


def _fmt(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_results(
    name: str, payload: dict[str, Any], folder: Path = RESULTS, meta: dict[str, Any] | None = None
) -> Path:
    """payload plus when and where it was measured (or the `meta` of an earlier run)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    meta = meta or {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    path.write_text(json.dumps({"meta": meta, **payload}, indent=2) + "\n")
    print(f"\nwrote {path}")
    return path
