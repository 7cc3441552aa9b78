"""The quantile trainer plug-in: quantiles of the forward log return over several horizons.

    [trainer]
    plugin = "retrainer.training.quantile:train"
    params = { quantiles = [0.05, 0.25, 0.5, 0.75, 0.95], horizons = [1, 4, 24] }

The default trainer's features and walk-forward split with embargo; a small MLP whose
head gives every (horizon, quantile) at once, fitted on the pinball loss; quantiles that
cannot cross (quantile_model.py). Scored against a naive baseline, the unconditional
quantiles of the training targets (quantile_metrics.py). In a nightly run (`ctx.window`
None) it fits on the train span and scores the test span; in a backtest it fits on the
window's training bars and writes the window's forecasts (`ctx.write_forecasts`).

torch is imported inside the functions that fit or load only: the scheduler imports this
module to validate `[trainer.params]` against `train.params_model` and must stay fast.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from retrainer.base.artifacts import atomic_write_bytes, atomic_write_json
from retrainer.base.costs import SymbolCosts
from retrainer.base.version import __version__
from retrainer.training.contract import TrainContext
from retrainer.training.features import (
    TIMESTAMP,
    as_utc,
    feature_rows,
    features_from_parquet,
    features_to_parquet,
)
from retrainer.training.fitting import json_bytes, json_safe
from retrainer.training.forecasts import ForecastWindow
from retrainer.training.quantile_metrics import quantile_scores, unconditional_quantiles
from retrainer.training.quantile_params import QuantileParams
from retrainer.training.splits import Span, SplitError, WalkForwardSplit, walk_forward_split
from retrainer.training.trainer import ohlcv_values_sha256

if TYPE_CHECKING:
    from retrainer.training.quantile_model import QuantileCheckpoint, QuantileFit

MODEL_NAME = "quantile_mlp"
FEATURES_FILE = "features.parquet"
SPLIT_FILE = "split_indices.json"
TRAINING_LOG_FILE = "training_log.json"
MODEL_FILE = "model.bin"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
# The bar's position in ctx.data: a row's label over h bars ends at bar position + h.
BAR = "bar"
CROSSING = "enforced"  # the head's construction keeps quantiles in order (quantile_model.py)


def target_column(horizon: int) -> str:
    return f"target_h{horizon}"


def train(ctx: TrainContext) -> dict[str, Any]:
    """Nightly (ctx.window None): fit on the train span, score the test span. Backtest:
    fit on the window's training bars, forecast its forecast span. Every artifact
    written, metrics.json last; returns the metrics."""
    started = time.perf_counter()
    params = QuantileParams.model_validate(dict(ctx.params))
    frame = features_step(ctx, params)
    if ctx.window is None:
        metrics = _train_nightly(ctx, params, frame)
    else:
        metrics = _train_window(ctx, params, frame, ctx.window)
    ctx.emit(
        "coin_trained",
        epochs=metrics["epochs_run"],
        best_epoch=metrics["best_epoch"],
        seconds=round(time.perf_counter() - started, 3),
    )
    return metrics


def prepare(ctx: TrainContext) -> None:
    """The CPU stage of two: features (and a nightly run's split) as partial outputs."""
    params = QuantileParams.model_validate(dict(ctx.params))
    frame = features_step(ctx, params)
    if ctx.window is None:
        split_step(ctx, labelled(frame, params), params)


# --- features and targets ---------------------------------------------------------------------


def build_frame(bars: pd.DataFrame, params: QuantileParams) -> pd.DataFrame:
    """Every bar with complete feature history (the default trainer's features: bars up to
    t only), its position in `bars`, and its forward log return over each horizon
    (NaN where the horizon runs past the data)."""
    rows = feature_rows(bars, params.feature_params())
    stamps = pd.Index(as_utc(bars[TIMESTAMP]))
    positions = stamps.get_indexer(pd.Index(rows[TIMESTAMP]))
    log_close = np.log(bars["close"].to_numpy(np.float64))
    rows.insert(1, BAR, positions.astype(np.int64))
    for h in params.horizons:
        ahead = positions + h
        known = ahead < len(log_close)
        target = np.full(len(rows), np.nan)
        target[known] = log_close[ahead[known]] - log_close[positions[known]]
        rows[target_column(h)] = target
    return rows


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The model's inputs, in column order: all but the timestamp, bar and targets."""
    return [c for c in frame.columns if c not in (TIMESTAMP, BAR) and not c.startswith("target_h")]


def target_columns(params: QuantileParams) -> list[str]:
    return [target_column(h) for h in params.horizons]


def labelled(frame: pd.DataFrame, params: QuantileParams) -> pd.DataFrame:
    """The rows whose every horizon's return is known."""
    return frame.dropna(subset=target_columns(params)).reset_index(drop=True)


def features_step(ctx: TrainContext, params: QuantileParams) -> pd.DataFrame:
    reused = ctx.reuse_partial(FEATURES_FILE)
    if reused is not None:
        frame = features_from_parquet(reused.read_bytes())
        if set(target_columns(params)) <= set(frame.columns) and BAR in frame.columns:
            return frame
    frame = build_frame(ctx.data, params)
    ctx.save_partial(FEATURES_FILE, features_to_parquet(frame))
    return frame


def split_step(ctx: TrainContext, frame: pd.DataFrame, params: QuantileParams) -> WalkForwardSplit:
    reused = ctx.reuse_partial(SPLIT_FILE)
    if reused is not None:
        split = WalkForwardSplit.from_json_bytes(reused.read_bytes())
        # The partial key ties it to the same data and params; this guards a code change.
        if (split.n_rows, split.horizon_bars, split.embargo_bars) == (
            len(frame),
            params.max_horizon,
            params.embargo_bars,
        ):
            return split
    split = walk_forward_split(
        frame[TIMESTAMP],
        (params.train_fraction, params.val_fraction, params.test_fraction),
        horizon_bars=params.max_horizon,
        embargo_bars=params.embargo_bars,
    )
    ctx.save_partial(SPLIT_FILE, split.to_json_bytes())
    return split


# --- fitting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fitted:
    checkpoint: QuantileCheckpoint
    result: QuantileFit


def fit_step(
    ctx: TrainContext,
    params: QuantileParams,
    train_rows: pd.DataFrame,
    val_rows: pd.DataFrame,
    names: list[str],
) -> Fitted:
    from retrainer.training.model import Standardiser
    from retrainer.training.quantile_model import QuantileCheckpoint, TargetScaler, fit

    targets = target_columns(params)
    train_x = train_rows[names].to_numpy(np.float64)
    train_y = train_rows[targets].to_numpy(np.float64)
    # Both scales from the training rows only: nothing from validation or later.
    standardiser, scaler = Standardiser.fit(train_x), TargetScaler.fit(train_y)
    result = fit(
        standardiser.transform(train_x),
        scaler.transform(train_y),
        standardiser.transform(val_rows[names].to_numpy(np.float64)),
        scaler.transform(val_rows[targets].to_numpy(np.float64)),
        params,
        seed=ctx.seed,
        device=ctx.device,
    )
    ctx.save_partial(TRAINING_LOG_FILE, json_bytes(result.log_dict()))
    checkpoint = QuantileCheckpoint(result.model, standardiser, scaler, names, params)
    return Fitted(checkpoint, result)


def _fit_facts(fitted: Fitted) -> dict[str, Any]:
    return {
        "epochs_run": len(fitted.result.epochs),
        "best_epoch": fitted.result.best_epoch,
        "best_val_loss": fitted.result.best_val_loss,
        "quantile_crossing": CROSSING,
    }


def baseline_quantiles(rows: pd.DataFrame, params: QuantileParams) -> np.ndarray:
    """(horizons, quantiles): each horizon's unconditional quantiles over `rows`."""
    return np.stack(
        [
            unconditional_quantiles(rows[target_column(h)].to_numpy(np.float64), params.quantiles)
            for h in params.horizons
        ]
    )


def span_scores(
    params: QuantileParams, rows: pd.DataFrame, predicted: np.ndarray, baseline: np.ndarray
) -> dict[str, Any]:
    """quantile_scores of `predicted` (rows, horizons, quantiles) on the rows whose return
    over each horizon is known."""
    realised, forecast, base = {}, {}, {}
    for k, h in enumerate(params.horizons):
        y = rows[target_column(h)].to_numpy(np.float64)
        known = np.isfinite(y)
        realised[h], forecast[h] = y[known], predicted[known, k, :]
        base[h] = np.broadcast_to(baseline[k], (int(known.sum()), len(params.quantiles)))
    return quantile_scores(params.quantiles, params.horizons, realised, forecast, base)


# --- a nightly item ---------------------------------------------------------------------------


def _train_nightly(
    ctx: TrainContext, params: QuantileParams, frame: pd.DataFrame
) -> dict[str, Any]:
    rows = labelled(frame, params)
    split = split_step(ctx, rows, params)
    names = feature_columns(rows)
    train_rows, val_rows, test_rows = (_rows(rows, s) for s in (split.train, split.val, split.test))
    fitted = fit_step(ctx, params, train_rows, val_rows, names)
    baseline = baseline_quantiles(train_rows, params)
    predicted = fitted.checkpoint.predict(test_rows[names].to_numpy(np.float64), ctx.device)
    metrics = {
        "symbol": ctx.symbol,
        "n_train_rows": split.train.rows,
        "n_val_rows": split.val.rows,
        "n_test_rows": split.test.rows,
        "test_bars": split.test.rows,
        **_fit_facts(fitted),
        **span_scores(params, test_rows, predicted, baseline),
    }
    metrics = dict(json_safe(metrics))
    _write_final_artifacts(ctx, params, fitted, baseline, split.to_dict(), metrics)
    return metrics


def _rows(frame: pd.DataFrame, span: Span) -> pd.DataFrame:
    return frame.iloc[span.start : span.stop]


# --- a backtest window ------------------------------------------------------------------------


def _train_window(
    ctx: TrainContext, params: QuantileParams, frame: pd.DataFrame, window: ForecastWindow
) -> dict[str, Any]:
    bar_times = as_utc(ctx.data[TIMESTAMP]).reset_index(drop=True)
    usable = window_training_rows(frame, bar_times, window, params)
    train_rows, val_rows = _window_split(usable, params, window)
    names = feature_columns(frame)
    fitted = fit_step(ctx, params, train_rows, val_rows, names)
    # Every label the fit saw (train and validation rows), all at or before train_last.
    baseline = baseline_quantiles(usable, params)
    window_start = usable[TIMESTAMP].iloc[0]
    window_end = bar_times.iloc[int(usable[BAR].iloc[-1]) + params.max_horizon]
    stamps = frame[TIMESTAMP]
    at = frame[(stamps >= _utc(window.forecast_first)) & (stamps <= _utc(window.forecast_last))]
    predicted = fitted.checkpoint.predict(at[names].to_numpy(np.float64), ctx.device)
    forecasts = forecast_frame(
        ctx.symbol, params, at, predicted, baseline, window_start, window_end
    )
    ctx.write_forecasts(forecasts)
    split = {
        "window": window.to_dict(),
        "embargo_bars": params.embargo_bars,
        "train": _span_dict(train_rows),
        "val": _span_dict(val_rows),
        "window_start": _iso(window_start),
        "window_end": _iso(window_end),
    }
    ctx.save_partial(SPLIT_FILE, json_bytes(split))
    metrics = {
        "symbol": ctx.symbol,
        "window": window.name,
        "window_start": _iso(window_start),
        "window_end": _iso(window_end),
        "n_train_rows": len(train_rows),
        "n_val_rows": len(val_rows),
        **_fit_facts(fitted),
        **score_forecasts(forecasts),
    }
    metrics = dict(json_safe(metrics))
    _write_final_artifacts(ctx, params, fitted, baseline, split, metrics)
    return metrics


def window_training_rows(
    frame: pd.DataFrame, bar_times: pd.Series, window: ForecastWindow, params: QuantileParams
) -> pd.DataFrame:
    """The rows a window may fit on: at or after train_first, and every horizon's label
    ending at or before train_last (bar t + max(horizons) <= train_last)."""
    bar_ns = bar_times.dt.as_unit("ns").astype("int64").to_numpy()
    label_end = frame[BAR].to_numpy(np.int64) + params.max_horizon
    in_data = label_end < len(bar_ns)
    end_ns = np.full(len(frame), np.iinfo(np.int64).max)
    end_ns[in_data] = bar_ns[label_end[in_data]]
    inside = (frame[TIMESTAMP] >= _utc(window.train_first)).to_numpy() & (
        end_ns <= _utc(window.train_last).as_unit("ns").value
    )
    return frame[inside].reset_index(drop=True)


def _window_split(
    usable: pd.DataFrame, params: QuantileParams, window: ForecastWindow
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train, then embargo_bars rows, then validation: the last val share of the rows
    (val_fraction / (train_fraction + val_fraction); the window's forecasts are its test)."""
    share = params.val_fraction / (params.train_fraction + params.val_fraction)
    n_val = int((len(usable) - params.embargo_bars) * share)
    n_train = len(usable) - params.embargo_bars - n_val
    if n_val < 1 or n_train < 2:
        raise SplitError(
            f"window {window.name}: {len(usable)} training rows (labels ending by "
            f"{window.train_last}) are too few for train and validation rows with an "
            f"embargo of {params.embargo_bars} bars"
        )
    return usable.iloc[:n_train], usable.iloc[len(usable) - n_val :]


def forecast_frame(
    symbol: str,
    params: QuantileParams,
    rows: pd.DataFrame,
    predicted: np.ndarray,
    baseline: np.ndarray,
    window_start: pd.Timestamp,
    window_end: pd.Timestamp,
) -> pd.DataFrame:
    """forecasts.py's schema: one row per (time, horizon, quantile), with the baseline."""
    n, n_h, n_q = len(rows), len(params.horizons), len(params.quantiles)
    per_row = n_h * n_q
    realised = rows[target_columns(params)].to_numpy(np.float64)
    return pd.DataFrame(
        {
            "time": pd.DatetimeIndex(rows[TIMESTAMP]).repeat(per_row),
            "symbol": symbol,
            "model": MODEL_NAME,
            "quantile": np.tile(np.asarray(params.quantiles, dtype=np.float64), n * n_h),
            "horizon": np.tile(np.repeat(np.asarray(params.horizons, dtype=np.int64), n_q), n),
            "window_start": window_start,
            "window_end": window_end,
            "forecast": predicted.reshape(-1),
            "realised": np.repeat(realised, n_q, axis=1).reshape(-1),
            "baseline": np.tile(baseline.reshape(-1), n),
        }
    )


def _span_dict(rows: pd.DataFrame) -> dict[str, Any]:
    return {
        "rows": len(rows),
        "first_timestamp": _iso(rows[TIMESTAMP].iloc[0]),
        "last_timestamp": _iso(rows[TIMESTAMP].iloc[-1]),
    }


def _utc(text: str) -> pd.Timestamp:
    stamp = pd.Timestamp(text)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _iso(stamp: pd.Timestamp) -> str:
    return stamp.isoformat()


# --- scoring a backtest's forecasts -----------------------------------------------------------


def score_forecasts(frame: pd.DataFrame, costs: SymbolCosts | None = None) -> dict[str, Any]:
    """The walk-forward metrics of a symbol's forecasts (every window, forecasts.py's
    schema): quantile_scores over the rows with a realised value, `forecast_rows`, and
    `windows` (distinct window_end). Costs do not enter a quantile's score."""
    quantiles = sorted(float(q) for q in frame["quantile"].dropna().unique())
    horizons = sorted(int(h) for h in frame["horizon"].unique())
    has_baseline = "baseline" in frame.columns
    realised, forecast, baseline = {}, {}, {}
    for h in horizons:
        rows = frame[
            (frame["horizon"] == h) & frame["realised"].notna() & frame["quantile"].notna()
        ]
        index = ["window_end", "time"]
        wide = rows.pivot(index=index, columns="quantile", values="forecast")
        wide = wide.reindex(columns=quantiles).dropna()
        realised[h] = rows.groupby(index)["realised"].first().reindex(wide.index).to_numpy()
        forecast[h] = wide.to_numpy(np.float64)
        if has_baseline:
            base = rows.pivot(index=index, columns="quantile", values="baseline")
            baseline[h] = base.reindex(index=wide.index, columns=quantiles).to_numpy(np.float64)
        else:
            baseline[h] = np.full_like(forecast[h], np.nan)
    scores = quantile_scores(quantiles, horizons, realised, forecast, baseline)
    scores["forecast_rows"] = len(frame)
    scores["windows"] = int(frame["window_end"].nunique())
    return dict(json_safe(scores))


# --- artifacts --------------------------------------------------------------------------------


def _write_final_artifacts(
    ctx: TrainContext,
    params: QuantileParams,
    fitted: Fitted,
    baseline: np.ndarray,
    split: dict[str, Any],
    metrics: dict[str, Any],
) -> None:
    """model.bin and config.json first, metrics.json last: metrics mean the attempt is whole."""
    import torch

    from retrainer.training.quantile_model import checkpoint_bytes

    point = fitted.checkpoint
    atomic_write_bytes(
        ctx.out_dir / MODEL_FILE,
        checkpoint_bytes(
            point.model, point.standardiser, point.scaler, point.feature_names, params
        ),
    )
    config = {
        "symbol": ctx.symbol,
        "model": MODEL_NAME,
        "params": params.model_dump(mode="json"),
        "features": point.feature_names,
        "split": split,
        # The naive forecast, per horizon (in params.horizons' order) and level.
        "baseline_quantiles": {
            str(h): list(map(float, baseline[k])) for k, h in enumerate(params.horizons)
        },
        "quantile_crossing": CROSSING,
        "data_sha256": ohlcv_values_sha256(ctx.data),
        "data_rows": len(ctx.data),
        "costs": ctx.costs.to_dict(),
        "code_version": __version__,
        "torch_version": torch.__version__,
        "seed": ctx.seed,
        "device": ctx.device,
        "threads": ctx.threads,
        "compute_threads": params.compute_threads,
    }
    atomic_write_json(ctx.out_dir / CONFIG_FILE, json_safe(config))
    atomic_write_json(ctx.out_dir / METRICS_FILE, metrics)


# --- the hooks --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedQuantileModel:
    """A model this trainer wrote, ready to predict quantiles of the forward log return."""

    checkpoint: QuantileCheckpoint
    config: dict[str, Any] = field(default_factory=dict)  # its config.json
    metrics: dict[str, Any] = field(default_factory=dict)  # its metrics.json
    device: str = "cpu"

    @property
    def params(self) -> QuantileParams:
        return self.checkpoint.params

    @property
    def feature_names(self) -> list[str]:
        return list(self.checkpoint.feature_names)

    def features(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Timestamp and inputs of every bar with complete feature history, the latest
        bars (whose returns are not known yet) included."""
        rows = feature_rows(bars, self.params.feature_params())
        return rows[[TIMESTAMP, *self.feature_names]]

    def predict_quantiles(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Per bar (by timestamp), one column per (horizon, quantile): the forecast log
        return from that bar's close over the horizon."""
        rows = self.features(bars)
        columns = pd.MultiIndex.from_product(
            [list(self.params.horizons), list(self.params.quantiles)], names=["horizon", "quantile"]
        )
        index = pd.DatetimeIndex(rows[TIMESTAMP], name=TIMESTAMP)
        if len(rows) == 0:
            return pd.DataFrame(index=index, columns=columns, dtype=np.float64)
        predicted = self.checkpoint.predict(
            rows[self.feature_names].to_numpy(np.float64), self.device
        )
        return pd.DataFrame(predicted.reshape(len(rows), -1), index=index, columns=columns)


def load(model_dir: Path, device: str = "cpu") -> LoadedQuantileModel:
    """A model this trainer wrote (model.bin, config.json, metrics.json), ready to predict."""
    from retrainer.training.quantile_model import load_checkpoint

    config = json.loads((model_dir / CONFIG_FILE).read_text("utf-8"))
    metrics_path = model_dir / METRICS_FILE
    metrics = json.loads(metrics_path.read_text("utf-8")) if metrics_path.is_file() else {}
    return LoadedQuantileModel(
        checkpoint=load_checkpoint((model_dir / MODEL_FILE).read_bytes()),
        config=config,
        metrics=metrics,
        device=device,
    )


def evaluate(champion_dir: Path, ctx: TrainContext) -> dict[str, Any]:
    """The champion (an earlier nightly model of this trainer) scored on this attempt's
    test span, for the promotion gate: its own params and baseline, the rows whose
    timestamps lie in the challenger's test span. metrics.json's keys plus
    `evaluated_rows`."""
    champion = load(champion_dir, device=ctx.device)
    params = champion.params
    test = WalkForwardSplit.from_json_bytes((ctx.out_dir / SPLIT_FILE).read_bytes()).test
    frame = labelled(build_frame(ctx.data, params), params)
    stamps = frame[TIMESTAMP]
    rows = frame[(stamps >= _utc(test.first_timestamp)) & (stamps <= _utc(test.last_timestamp))]
    recorded = champion.config["baseline_quantiles"]
    baseline = np.array([recorded[str(h)] for h in params.horizons], dtype=np.float64)
    predicted = champion.checkpoint.predict(
        rows[champion.feature_names].to_numpy(np.float64), ctx.device
    )
    facts = ("n_train_rows", "n_val_rows", "epochs_run", "best_epoch", "best_val_loss")
    metrics = {
        "symbol": ctx.symbol,
        **{key: champion.metrics.get(key) for key in facts},
        "quantile_crossing": CROSSING,
        "n_test_rows": len(rows),
        "test_bars": len(rows),
        **span_scores(params, rows, predicted, baseline),
        "evaluated_rows": len(rows),
    }
    return dict(json_safe(metrics))


train.params_model = QuantileParams  # type: ignore[attr-defined]
train.prepare = prepare  # type: ignore[attr-defined]
train.load = load  # type: ignore[attr-defined]
train.evaluate = evaluate  # type: ignore[attr-defined]
train.score_forecasts = score_forecasts  # type: ignore[attr-defined]
# The gate's rules for this trainer's figures, used unless [promote] names its own: a
# lower test pinball than the champion's on the same bars, and no loss of skill over the
# naive baseline beyond 0.02.
train.promotion_rules = (  # type: ignore[attr-defined]
    {"metric": "pinball_mean", "greater_is_better": False, "min_absolute_change": 0},
)
train.promotion_guards = (  # type: ignore[attr-defined]
    {"metric": "pinball_skill", "greater_is_better": True, "tolerance": 0.02},
)
# Imported once in the zygote, so an attempt does not pay for torch.nn on each start.
train.preload_modules = ("torch", "retrainer.training.quantile_model")  # type: ignore[attr-defined]


def warm_up() -> None:
    """In the zygote, once: a tiny fit, nightly and on a window (training/warm.py)."""
    from retrainer.training.warm import warm_trainer

    warm_trainer(train, {"hidden_sizes": [4], "max_epochs": 2, "patience_epochs": 1})


train.warm_up = warm_up  # type: ignore[attr-defined]
