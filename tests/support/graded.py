"""A trainer whose quality a test chooses: its metrics are `[trainer.params] scores`.

    [trainer]
    plugin = "tests.support.graded:graded"
    [trainer.params]
    scores = { BTCUSDT = { test_log_loss = 0.69, accuracy_edge = 0.01 } }

It writes a model.bin that names its scores, a features.parquet through save_partial (a
stand-in for the default trainer's), and has the `evaluate` hook: the champion re-scored
on this attempt's test span is its own model.bin's scores, shifted by `rescore_shift` (so
a test can tell a re-evaluated comparison from one of the reported metrics).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from retrainer.training.contract import TrainContext

DEFAULT_SCORES = {"test_log_loss": 0.69, "accuracy_edge": 0.0}


def _scores(ctx: TrainContext) -> dict[str, float]:
    table = dict(ctx.params.get("scores", {}))
    return {**DEFAULT_SCORES, **dict(table.get(ctx.symbol, {}))}


def graded(ctx: TrainContext) -> dict[str, Any]:
    scores = _scores(ctx)
    ctx.save_partial("features.parquet", b"features of " + ctx.symbol.encode() * 1000)
    (ctx.out_dir / "model.bin").write_text(json.dumps(scores))
    return {"symbol": ctx.symbol, "test_bars": int(ctx.params.get("test_bars", 500)), **scores}


def evaluate(champion_dir: Path, ctx: TrainContext) -> dict[str, Any]:
    if ctx.params.get("evaluate_fails"):
        raise RuntimeError("the champion's format is too old to score")
    scored = json.loads((champion_dir / "model.bin").read_text())
    shift = float(ctx.params.get("rescore_shift", 0.0))
    return {**scored, "test_log_loss": scored["test_log_loss"] + shift}


graded.evaluate = evaluate  # type: ignore[attr-defined]
graded.preload_modules = ()  # type: ignore[attr-defined]
