"""Run once in the zygote after its imports: the first call of each child's hot path.

A fork inherits imported modules but not what their first call builds: pandas' and
pyarrow's lazy imports, abc's subclass caches behind every isinstance check, compiled
regular expressions, structlog's bound methods. Without this every attempt rebuilt them,
a cost measured in docs/benchmarks.md. Then gc.freeze(): the
zygote's objects (torch's among them) go to the permanent generation, so a child's
collections neither walk them nor dirty their copy-on-write pages.
"""

from __future__ import annotations

import gc
import sys
import tempfile
from pathlib import Path

import structlog

from retrainer.base.artifacts import atomic_write_json, sha256_file
from retrainer.base.costs import SymbolCosts
from retrainer.base.logs import close_logging, configure_worker_logging
from retrainer.engine.worker import blas_threadpools

_ROWS = 48


def warm_up() -> None:
    with tempfile.TemporaryDirectory(prefix="retrainer-warmup-") as tmp:
        folder = Path(tmp)
        if "pyarrow.parquet" in sys.modules:  # preloaded: this trainer reads its bars
            _warm_bars(folder / "WARMUP.parquet")
        sha256_file(Path(__file__))
        SymbolCosts.from_dict(SymbolCosts("WARMUP", 10.0, 2.0, 1.0, _ROWS).to_dict())
        atomic_write_json(folder / "result.json", {"ok": True, "metrics": {"x": 1.0}})
        configure_worker_logging(folder / "engine.log", folder / "worker.log", "info")
        structlog.get_logger().info("warmup", symbol="WARMUP", attempt=0)
        close_logging()
        structlog.contextvars.clear_contextvars()
    blas_threadpools()
    gc.collect()
    gc.freeze()


def _warm_bars(path: Path) -> None:
    import numpy as np
    import pandas as pd

    from retrainer.base.data import load_ohlcv

    close = np.linspace(100.0, 101.0, _ROWS)
    frame = pd.DataFrame(
        {
            "timestamp": pd.date_range("2026-01-01", periods=_ROWS, freq="h", tz="UTC"),
            "open": close,
            "high": close * 1.001,
            "low": close * 0.999,
            "close": close,
            "volume": np.ones(_ROWS),
        }
    )
    frame.to_parquet(path, index=False)
    load_ohlcv(path, 1)
