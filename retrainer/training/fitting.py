"""The default trainer's steps that its nightly mode (trainer.py) and its backtest-window
mode (walkforward.py) share: fitting on given rows, the strategy rule, the span metrics,
and JSON without NaN."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from retrainer.training.contract import TrainContext
from retrainer.training.evaluate import annualisation, evaluate_test_span
from retrainer.training.features import FWD_RET_H, TARGET, TIMESTAMP, as_utc
from retrainer.training.params import TrainerParams
from retrainer.training.strategy import StrategyRule

if TYPE_CHECKING:
    from retrainer.training.model import FitResult, Standardiser

FEATURES_FILE = "features.parquet"
SPLIT_FILE = "split_indices.json"
TRAINING_LOG_FILE = "training_log.json"
MODEL_FILE = "model.bin"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"


def fit_rows(
    ctx: TrainContext,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    names: list[str],
    params: TrainerParams,
) -> tuple[FitResult, Standardiser, list[str]]:
    """Fit on these rows (directional ones), early-stopped on those; the log saved."""
    from retrainer.training.model import Standardiser, fit

    train_x = train_rows[names].to_numpy(np.float64)
    standardiser = Standardiser.fit(train_x)  # on the training span only: no peeking ahead
    fitted = fit(
        standardiser.transform(train_x),
        train_rows[TARGET].to_numpy(np.float32),
        standardiser.transform(val_rows[names].to_numpy(np.float64)),
        val_rows[TARGET].to_numpy(np.float32),
        params,
        seed=ctx.seed,
        device=ctx.device,
    )
    ctx.save_partial(TRAINING_LOG_FILE, json_bytes(fitted.log_dict()))
    return fitted, standardiser, names


def strategy_rule(params: TrainerParams, train_rows: pd.DataFrame) -> StrategyRule:
    """The test-span strategy, its return scale measured on the training span only."""
    returns = train_rows[FWD_RET_H].to_numpy(np.float64)
    mean_abs = float(np.mean(np.abs(returns))) if len(returns) else 0.0
    return StrategyRule(params.strategy, params.horizon_bars, mean_abs, params.edge_cost_multiple)


def span_metrics(
    ctx: TrainContext, rows: pd.DataFrame, prob: np.ndarray, rule: StrategyRule
) -> dict[str, Any]:
    """metrics.json's test-span figures, annualised on the whole bar history given."""
    annual = annualisation(as_utc(ctx.data[TIMESTAMP]), ctx.costs.bars_per_year)
    return evaluate_test_span(rows, prob, rule, ctx.costs, annual)


def json_safe(obj: Any) -> Any:
    """JSON has no NaN or infinity: undefined numbers become null, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    return obj


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(json_safe(obj), indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
