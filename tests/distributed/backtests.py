"""A backtest on a cluster: the same check for every remote driver."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import BacktestLayout
from retrainer.ledger.journal import read_ledger
from tests.conftest import TINY_TRAINER
from tests.distributed.conftest import cluster_config, run_retrainer
from tests.test_item_faults import symbols_of


def assert_a_backtest_runs_its_windows_on_the_nodes(
    tmp_path: Path, small_data: Path, driver: str, cluster: dict[str, Any]
) -> None:
    """Each (symbol, window) an attempt on a node; the folders come back, verify, and
    are assembled into the symbol's forecasts; the nodes keep nothing of them."""
    symbol = symbols_of(small_data)[0]
    config = cluster_config(
        tmp_path,
        small_data,
        {symbol: "ok"},
        driver,
        cluster,
        {
            "trainer": {"plugin": "retrainer.training.trainer:train", "params": TINY_TRAINER},
            "backtest": {"window_bars": 1500, "step_bars": 800},
        },
    )
    done = run_retrainer(tmp_path, "backtest", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    layout = BacktestLayout(tmp_path / "root", "walkforward")
    entries = read_ledger(layout.status_path(""), layout.journal_path("")).entries
    assert len(entries) >= 3 and all(e.state.value == "success" for e in entries.values())
    assert all(e.attempts[-1].node for e in entries.values())  # ran on a node, not the head
    summary = json.loads(layout.backtest_summary_path().read_text())
    assert summary["complete"] and summary["symbols"][symbol]["windows_done"] == len(entries)
    scratches = sorted((tmp_path / "scratch").glob("retrainer-node-*"))
    assert scratches and all(list((s / "attempts").iterdir()) == [] for s in scratches)
