"""The default trainer plug-in: features → walk-forward split → MLP → test-span metrics.

    [trainer]
    plugin = "retrainer.training.trainer:train"
    params = { horizon_bars = 4, hidden_sizes = [64, 32] }

torch is imported inside `train` only: the scheduler imports this module to validate
`[trainer.params]` against `train.params_model` and must stay fast.

Three hooks beside `train`: `train.evaluate(champion_dir, ctx)` scores an earlier model of
the symbol on this attempt's test span (for the promotion gate),
`train.load(model_dir)` gives a model ready to predict (LoadedModel), and
`train.prepare(ctx)` builds the features and the split alone: the CPU stage of two
([run] two_stage), whose partial outputs the train stage reuses. In a backtest window
(`ctx.window`) `train` fits on the window and forecasts out of sample (walkforward.py), and
`train.score_forecasts` scores a symbol's concatenated forecasts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from retrainer.base.artifacts import atomic_write_bytes, atomic_write_json
from retrainer.base.costs import SymbolCosts
from retrainer.base.data import data_values_sha256
from retrainer.base.version import __version__
from retrainer.training.contract import TrainContext
from retrainer.training.features import (
    OHLCV_COLUMNS,
    TIMESTAMP,
    as_utc,
    build_features,
    feature_names,
    features_from_parquet,
    features_to_parquet,
    has_direction,
)
from retrainer.training.fitting import (
    CONFIG_FILE,
    FEATURES_FILE,
    METRICS_FILE,
    MODEL_FILE,
    SPLIT_FILE,
    fit_rows,
    json_safe,
    span_metrics,
    strategy_rule,
)
from retrainer.training.loaded import LoadedModel
from retrainer.training.params import TrainerParams
from retrainer.training.splits import Span, WalkForwardSplit, walk_forward_split
from retrainer.training.strategy import StrategyRule

if TYPE_CHECKING:
    from retrainer.training.model import MLP, FitResult, Standardiser


def train(ctx: TrainContext) -> dict[str, Any]:
    """Build or reuse features and split, fit, evaluate, write every artifact; return metrics."""
    started = time.perf_counter()
    params = TrainerParams.model_validate(dict(ctx.params))
    if ctx.window is not None:  # a backtest's window: fit on it, forecast out of sample
        from retrainer.training.walkforward import train_window

        return train_window(ctx, params)
    frame = features_step(ctx, params)
    split = split_step(ctx, frame, params)
    fitted, standardiser, names = fit_step(ctx, frame, split, params)
    rule = strategy_rule(params, _rows(frame, split.train))
    metrics = evaluate_step(ctx, params, frame, split, fitted, standardiser, names, rule)
    write_final_artifacts(ctx, params, split, fitted, standardiser, names, metrics, rule)
    ctx.emit(
        "coin_trained",
        epochs=len(fitted.epochs),
        best_epoch=fitted.best_epoch,
        seconds=round(time.perf_counter() - started, 3),
    )
    return metrics


def prepare(ctx: TrainContext) -> None:
    """The CPU stage of two: features and the split, saved as partial outputs that the
    train stage reuses (its `ctx.reuse_dir` is this attempt's folder)."""
    params = TrainerParams.model_validate(dict(ctx.params))
    frame = features_step(ctx, params)
    split_step(ctx, frame, params)


train.params_model = TrainerParams  # type: ignore[attr-defined]
train.prepare = prepare  # type: ignore[attr-defined]
# Imported once in the zygote, so an attempt does not pay for torch.nn on each start.
train.preload_modules = ("torch", "retrainer.training.model")  # type: ignore[attr-defined]


def features_step(ctx: TrainContext, params: TrainerParams) -> pd.DataFrame:
    reused = ctx.reuse_partial(FEATURES_FILE)
    if reused is not None:
        return features_from_parquet(reused.read_bytes())
    frame = build_features(ctx.data, params)
    ctx.save_partial(FEATURES_FILE, features_to_parquet(frame))
    return frame


def split_step(ctx: TrainContext, frame: pd.DataFrame, params: TrainerParams) -> WalkForwardSplit:
    reused = ctx.reuse_partial(SPLIT_FILE)
    if reused is not None:
        split = WalkForwardSplit.from_json_bytes(reused.read_bytes())
        if _split_matches(split, frame, params):
            return split
    split = walk_forward_split(
        frame[TIMESTAMP],
        (params.train_fraction, params.val_fraction, params.test_fraction),
        horizon_bars=params.horizon_bars,
        embargo_bars=params.embargo_bars,
    )
    ctx.save_partial(SPLIT_FILE, split.to_json_bytes())
    return split


def _split_matches(split: WalkForwardSplit, frame: pd.DataFrame, params: TrainerParams) -> bool:
    # The partial key already ties a reused split to the same data and params; this guards
    # against a trainer change that kept the key.
    return (
        split.n_rows == len(frame)
        and split.horizon_bars == params.horizon_bars
        and split.embargo_bars == params.embargo_bars
    )


def fit_step(
    ctx: TrainContext, frame: pd.DataFrame, split: WalkForwardSplit, params: TrainerParams
) -> tuple[FitResult[MLP], Standardiser, list[str]]:
    # A zero forward return is neither up nor down: no target to learn (features.py).
    train_rows, val_rows = _directional(frame, split.train), _directional(frame, split.val)
    return fit_rows(ctx, train_rows, val_rows, feature_names(frame), params)


def evaluate_step(
    ctx: TrainContext,
    params: TrainerParams,
    frame: pd.DataFrame,
    split: WalkForwardSplit,
    fitted: FitResult[MLP],
    standardiser: Standardiser,
    names: list[str],
    rule: StrategyRule,
) -> dict[str, Any]:
    from retrainer.training.model import predict_proba

    test = _rows(frame, split.test)
    test_x = standardiser.transform(test[names].to_numpy(np.float64))
    prob = predict_proba(fitted.model, test_x, ctx.device, threads=params.compute_threads)
    fit_rows = len(_rows(frame, split.train)) + len(_rows(frame, split.val))
    fitted_rows = len(_directional(frame, split.train)) + len(_directional(frame, split.val))
    metrics = {
        "symbol": ctx.symbol,
        "n_train_rows": split.train.rows,
        "n_val_rows": split.val.rows,
        "n_test_rows": split.test.rows,
        "zero_return_fit_rows": fit_rows - fitted_rows,
        "epochs_run": len(fitted.epochs),
        "best_epoch": fitted.best_epoch,
        "best_val_loss": fitted.best_val_loss,
        **span_metrics(ctx, test, prob, rule),
    }
    return dict(json_safe(metrics))


def write_final_artifacts(
    ctx: TrainContext,
    params: TrainerParams,
    split: WalkForwardSplit,
    fitted: FitResult[MLP],
    standardiser: Standardiser,
    names: list[str],
    metrics: dict[str, Any],
    rule: StrategyRule,
) -> None:
    """model.bin and config.json first, metrics.json last: metrics mean the attempt is whole."""
    import torch

    from retrainer.training.model import checkpoint_bytes

    atomic_write_bytes(
        ctx.out_dir / MODEL_FILE, checkpoint_bytes(fitted.model, standardiser, names, params)
    )
    config = {
        "symbol": ctx.symbol,
        "params": params.model_dump(mode="json"),
        "features": names,
        "split": split.to_dict(),
        "data_sha256": ohlcv_values_sha256(ctx.data),
        "data_rows": len(ctx.data),
        "costs": ctx.costs.to_dict(),
        # What `evaluate` needs to apply this model's rule on another span.
        "strategy": {
            "name": rule.name,
            "horizon_bars": rule.horizon_bars,
            "mean_abs_return_h": rule.mean_abs_return_h,
            "edge_cost_multiple": rule.edge_cost_multiple,
        },
        "code_version": __version__,
        "torch_version": torch.__version__,
        "seed": ctx.seed,
        "device": ctx.device,
        "threads": ctx.threads,
        "compute_threads": params.compute_threads,
    }
    atomic_write_json(ctx.out_dir / CONFIG_FILE, json_safe(config))
    atomic_write_json(ctx.out_dir / METRICS_FILE, metrics)


def _rows(frame: pd.DataFrame, span: Span) -> pd.DataFrame:
    return frame.iloc[span.start : span.stop]


def _directional(frame: pd.DataFrame, span: Span) -> pd.DataFrame:
    rows = _rows(frame, span)
    return rows[has_direction(rows)]


# --- the hooks: an earlier model, scored again or loaded to predict -------------------------

# An earlier model's own training figures, reported as they were.
_TRAINING_FACTS = (
    "n_train_rows",
    "n_val_rows",
    "zero_return_fit_rows",
    "epochs_run",
    "best_epoch",
    "best_val_loss",
)


def evaluate(champion_dir: Path, ctx: TrainContext) -> dict[str, Any]:
    """The champion (an earlier attempt folder of this trainer) scored on the test span of
    this attempt (`ctx.out_dir`, after `train` returned): features from `ctx.data` with the
    champion's own params, the rows whose timestamps lie in the challenger's test span, the
    champion's strategy rule, today's costs. metrics.json's keys plus `evaluated_rows`."""
    champion = load(champion_dir, device=ctx.device)
    test = _challenger_split(ctx.out_dir).test
    frame = build_features(ctx.data, champion.params)
    first, last = pd.Timestamp(test.first_timestamp), pd.Timestamp(test.last_timestamp)
    stamps = frame[TIMESTAMP]
    rows = frame[(stamps >= first) & (stamps <= last)].reset_index(drop=True)
    prob = champion.predict_rows(rows)
    rule = _champion_rule(champion, frame[stamps < first])
    facts = {key: champion.metrics.get(key) for key in _TRAINING_FACTS}
    metrics = {
        "symbol": ctx.symbol,
        **facts,
        "n_test_rows": len(rows),
        **span_metrics(ctx, rows, prob, rule),
        "evaluated_rows": len(rows),
    }
    return dict(json_safe(metrics))


train.evaluate = evaluate  # type: ignore[attr-defined]


def load(model_dir: Path, device: str = "cpu") -> LoadedModel:
    """A model this trainer wrote (model.bin, config.json, metrics.json), ready to predict."""
    from retrainer.training.model import load_checkpoint

    config = json.loads((model_dir / CONFIG_FILE).read_text("utf-8"))
    metrics_path = model_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text("utf-8")) if metrics_path.is_file() else {}
    return LoadedModel(
        params=TrainerParams.model_validate(config["params"]),
        checkpoint=load_checkpoint((model_dir / MODEL_FILE).read_bytes()),
        config=config,
        metrics=metrics,
        device=device,
    )


train.load = load  # type: ignore[attr-defined]


def _challenger_split(out_dir: Path) -> WalkForwardSplit:
    split_path = out_dir / SPLIT_FILE
    if split_path.is_file():
        return WalkForwardSplit.from_json_bytes(split_path.read_bytes())
    config = json.loads((out_dir / CONFIG_FILE).read_text("utf-8"))
    return WalkForwardSplit.from_dict(config["split"])


def _champion_rule(champion: LoadedModel, before_test: pd.DataFrame) -> StrategyRule:
    """The rule the champion was trained with; a model from before config.json recorded it
    gets its return scale from the rows before the test span whose labels end before it."""
    recorded = champion.config.get("strategy")
    if isinstance(recorded, dict):
        return StrategyRule(
            recorded["name"],
            int(recorded["horizon_bars"]),
            float(recorded["mean_abs_return_h"]),
            float(recorded["edge_cost_multiple"]),
        )
    params = champion.params
    return strategy_rule(params, before_test.iloc[: max(0, len(before_test) - params.horizon_bars)])


def ohlcv_values_sha256(bars: pd.DataFrame) -> str:
    """base.data.data_values_sha256 of a frame: the same digest the plan computes."""
    timestamps = as_utc(bars[TIMESTAMP]).dt.as_unit("ns").astype("int64").to_numpy()
    return data_values_sha256(timestamps, {c: bars[c].to_numpy(np.float64) for c in OHLCV_COLUMNS})


def score_forecasts(frame: pd.DataFrame, costs: SymbolCosts) -> dict[str, Any]:
    """A symbol's backtest forecasts, all windows, scored (walkforward.score_forecasts)."""
    from retrainer.training.walkforward import score_forecasts as score

    return score(frame, costs)


train.score_forecasts = score_forecasts  # type: ignore[attr-defined]


def warm_up() -> None:
    """In the zygote, once: a tiny fit, nightly and on a window (training/warm.py)."""
    from retrainer.training.warm import warm_trainer

    warm_trainer(train, {"hidden_sizes": [4], "max_epochs": 2, "patience_epochs": 1})


train.warm_up = warm_up  # type: ignore[attr-defined]
