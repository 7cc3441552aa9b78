"""The default trainer in a backtest window: fit on the window's bars, forecast out of sample.

A row (a bar t) may be fitted only if its label is known by the window's `train_last`: the
bar t + horizon_bars is at or before it. Those rows are cut into train and validation (the
validation share of the trainer's fractions, the embargo between them); the model is fitted
and early-stopped on them alone, its strategy's return scale measured on the train rows. It
then forecasts P(up) at every bar of the forecast span from features that use bars up to
that bar only (features.py), and the strategy takes its positions there.

`score_forecasts` scores a symbol's windows concatenated in time: the classification
against the majority class, the strategy gross and net of costs, as in metrics.json.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from retrainer.base.artifacts import atomic_write_bytes, atomic_write_json
from retrainer.base.costs import BPS, SymbolCosts
from retrainer.base.version import __version__
from retrainer.training.contract import TrainContext
from retrainer.training.evaluate import (
    annualisation,
    classification_metrics,
    cost_fields,
)
from retrainer.training.features import (
    FWD_RET_1,
    FWD_RET_H,
    TIMESTAMP,
    as_utc,
    build_features,
    feature_names,
    feature_rows,
    has_direction,
)
from retrainer.training.fitting import (
    CONFIG_FILE,
    METRICS_FILE,
    MODEL_FILE,
    fit_rows,
    json_safe,
    span_metrics,
    strategy_rule,
)
from retrainer.training.forecasts import ForecastWindow
from retrainer.training.params import TrainerParams
from retrainer.training.splits import SplitError
from retrainer.training.strategy import NOT_TRADABLE, evaluate_strategy, trades

MODEL_NAME = "mlp_direction"


def train_window(ctx: TrainContext, params: TrainerParams) -> dict[str, Any]:
    """Fit on the window, write its forecasts, model, config and metrics; return metrics."""
    from retrainer.training.model import checkpoint_bytes, predict_proba

    window = ctx.window
    assert window is not None
    bars = ctx.data
    bar_times = as_utc(bars[TIMESTAMP]).reset_index(drop=True)
    labelled = build_features(bars, params)  # rows whose horizon return is known
    fit_frame = _fit_rows(labelled, bar_times, window, params.horizon_bars)
    train_rows, val_rows = _train_val(fit_frame, params)
    names = feature_names(labelled)
    fitted, standardiser, _ = fit_rows(
        ctx, train_rows[has_direction(train_rows)], val_rows[has_direction(val_rows)], names, params
    )
    rule = strategy_rule(params, train_rows)
    forecast = _forecast_rows(bars, bar_times, labelled, window, params)
    x = standardiser.transform(forecast[names].to_numpy(np.float64))
    prob = predict_proba(fitted.model, x, ctx.device, threads=params.compute_threads)
    cost = ctx.costs.cost_per_turnover_bps / BPS
    positions = rule.positions(prob, cost)
    fit_last_bar = int(np.searchsorted(_ns(bar_times), _ns(fit_frame[TIMESTAMP]))[-1])
    fit_last_bar += params.horizon_bars
    window_start, window_end = fit_frame[TIMESTAMP].iloc[0], bar_times.iloc[fit_last_bar]
    ctx.write_forecasts(
        pd.DataFrame(
            {
                "time": forecast[TIMESTAMP],
                "symbol": ctx.symbol,
                "model": MODEL_NAME,
                "quantile": math.nan,
                "horizon": params.horizon_bars,
                "window_start": window_start,
                "window_end": window_end,
                "forecast": prob,
                "realised": forecast[FWD_RET_H],
                "position": positions,
                "next_return": forecast[FWD_RET_1],
            }
        )
    )
    known = forecast[FWD_RET_H].notna() & forecast[FWD_RET_1].notna()
    metrics = {
        "symbol": ctx.symbol,
        "window": window.name,
        "window_start": window_start.isoformat(),
        "window_end": window_end.isoformat(),
        "n_train_rows": len(train_rows),
        "n_val_rows": len(val_rows),
        "forecast_rows": len(forecast),
        "epochs_run": len(fitted.epochs),
        "best_epoch": fitted.best_epoch,
        "best_val_loss": fitted.best_val_loss,
        **span_metrics(ctx, forecast[known].reset_index(drop=True), prob[known.to_numpy()], rule),
    }
    metrics = dict(json_safe(metrics))
    atomic_write_bytes(
        ctx.out_dir / MODEL_FILE, checkpoint_bytes(fitted.model, standardiser, names, params)
    )
    config = {
        "symbol": ctx.symbol,
        "params": params.model_dump(mode="json"),
        "features": names,
        "window": window.to_dict(),
        "fit_rows": {"first": window_start.isoformat(), "last_label_bar": window_end.isoformat()},
        "strategy": {
            "name": rule.name,
            "horizon_bars": rule.horizon_bars,
            "mean_abs_return_h": rule.mean_abs_return_h,
            "edge_cost_multiple": rule.edge_cost_multiple,
        },
        "costs": ctx.costs.to_dict(),
        "code_version": __version__,
        "seed": ctx.seed,
        "device": ctx.device,
    }
    atomic_write_json(ctx.out_dir / CONFIG_FILE, json_safe(config))
    atomic_write_json(ctx.out_dir / METRICS_FILE, metrics)
    return metrics


def _fit_rows(
    labelled: pd.DataFrame, bar_times: pd.Series, window: ForecastWindow, horizon: int
) -> pd.DataFrame:
    """The labelled rows of the training span whose label ends by train_last."""
    first, last = pd.Timestamp(window.train_first), pd.Timestamp(window.train_last)
    bar_ns = _ns(bar_times)
    last_bar = int(np.searchsorted(bar_ns, last.value, side="right")) - 1
    positions = np.searchsorted(bar_ns, _ns(labelled[TIMESTAMP]))
    inside = (labelled[TIMESTAMP] >= first).to_numpy() & (positions + horizon <= last_bar)
    rows = labelled[inside].reset_index(drop=True)
    if rows.empty:
        raise SplitError(f"window {window.name}: no labelled rows in its training span")
    return rows


def _ns(times: pd.Series) -> np.ndarray:
    ns: np.ndarray = as_utc(times).dt.as_unit("ns").astype("int64").to_numpy()
    return ns


def _train_val(rows: pd.DataFrame, params: TrainerParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The last validation share (the trainer's fractions) after an embargo; the rest train."""
    share = params.val_fraction / (params.train_fraction + params.val_fraction)
    n_val = int((len(rows) - params.embargo_bars) * share)
    n_train = len(rows) - params.embargo_bars - n_val
    if n_val < 1 or n_train < 1:
        raise SplitError(
            f"{len(rows)} labelled rows in the window are too few for train and validation "
            f"with an embargo of {params.embargo_bars} bars"
        )
    return rows.iloc[:n_train], rows.iloc[n_train + params.embargo_bars :]


def _forecast_rows(
    bars: pd.DataFrame,
    bar_times: pd.Series,
    labelled: pd.DataFrame,
    window: ForecastWindow,
    params: TrainerParams,
) -> pd.DataFrame:
    """Every bar of the forecast span with complete features; its realised returns where
    the data has them (NaN past its end)."""
    rows = feature_rows(bars, params)
    times = as_utc(rows[TIMESTAMP])
    first, last = pd.Timestamp(window.forecast_first), pd.Timestamp(window.forecast_last)
    rows = rows[((times >= first) & (times <= last)).to_numpy()].reset_index(drop=True)
    known = labelled[[TIMESTAMP, FWD_RET_1, FWD_RET_H]]
    return rows.merge(known, on=TIMESTAMP, how="left")


def score_forecasts(frame: pd.DataFrame, costs: SymbolCosts) -> dict[str, Any]:
    """The walk-forward metrics of one symbol's forecasts (all its windows, in time
    order): accuracy against the majority class with its standard error, the strategy's
    positions (as each window took them) gross and net of costs, against buy-and-hold."""
    rows = frame.sort_values("time", kind="stable").reset_index(drop=True)
    horizon = int(rows["horizon"].iloc[0]) if len(rows) else 1
    known = rows[rows["realised"].notna() & rows["next_return"].notna()].reset_index(drop=True)
    prob = known["forecast"].to_numpy(np.float64)
    positions = known["position"].to_numpy(np.float64)
    next_return = known["next_return"].to_numpy(np.float64)
    annual = annualisation(as_utc(known["time"]), costs.bars_per_year)
    cost = costs.cost_per_turnover_bps / BPS
    gross = evaluate_strategy(positions, next_return, 0.0, annual.bars_per_year)
    net = evaluate_strategy(positions, next_return, cost, annual.bars_per_year)
    buy_hold = evaluate_strategy(np.ones_like(positions), next_return, 0.0, annual.bars_per_year)
    metrics = {
        **classification_metrics(prob, known["realised"].to_numpy(np.float64), horizon),
        "forecast_rows": len(rows),
        "scored_rows": len(known),
        "windows": int(rows["window_end"].nunique()),
        "first_forecast": rows["time"].iloc[0].isoformat() if len(rows) else None,
        "last_forecast": rows["time"].iloc[-1].isoformat() if len(rows) else None,
        "trades": trades(positions),
        **gross.prefixed("gross"),
        **(net if costs.tradable else NOT_TRADABLE).prefixed("net"),
        **buy_hold.prefixed("buy_hold"),
        **cost_fields(costs),
        **annual.to_dict(),
    }
    return dict(json_safe(metrics))


def equity_curve(frame: pd.DataFrame, costs: SymbolCosts) -> pd.DataFrame:
    """time and cumulative net log return of the strategy, bar by bar (the report's curve)."""
    from retrainer.training.strategy import strategy_pnl

    rows = frame.sort_values("time", kind="stable")
    rows = rows[rows["next_return"].notna()]
    cost = costs.cost_per_turnover_bps / BPS if costs.tradable else 0.0
    pnl = strategy_pnl(
        rows["position"].to_numpy(np.float64), rows["next_return"].to_numpy(np.float64), cost
    )
    return pd.DataFrame({"time": rows["time"].to_numpy(), "equity": np.cumsum(pnl)})
