"""Test-span metrics: classification against the majority-class baseline, with standard
errors, and the strategy's P&L gross and net of the symbol's costs.

Pure functions of the test rows (timestamp, fwd_ret_1, fwd_ret_h), the model's P(up) per
row, the strategy rule, the costs and the annualisation. A row whose forward return over
the horizon is exactly 0 is neither up nor down: it is left out of the classification
metrics and counted (`zero_return_bars`); the strategy holds through it as through any.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from retrainer.base.costs import BPS, SymbolCosts
from retrainer.training.features import FWD_RET_1, FWD_RET_H, TIMESTAMP
from retrainer.training.strategy import (
    NOT_TRADABLE,
    StrategyRule,
    evaluate_strategy,
    position_changes,
    trades,
    turnover,
)

SECONDS_PER_YEAR = 365.25 * 24 * 3600
_SECONDS_PER_DAY = 86_400.0
_PROBABILITY_CLIP = 1e-7


@dataclass(frozen=True)
class Annualisation:
    bars_per_year: float
    source: Literal["observed", "config"]

    def to_dict(self) -> dict[str, Any]:
        return {"bars_per_year": self.bars_per_year, "bars_per_year_source": self.source}


def observed_bars_per_year(timestamps: pd.Series) -> float:
    """Bars per year actually observed: (n - 1) bars over the span, in years.

    Counts the bars a market really has (252 a year for daily stock bars, about 6,200
    for hourly FX), where a calendar spacing (365.25 days of 24 hours) would not.
    """
    if len(timestamps) < 2:
        raise ValueError("cannot observe bars per year: need two or more timestamps")
    span_s = float((timestamps.max() - timestamps.min()).total_seconds())
    if not span_s > 0:
        raise ValueError("cannot observe bars per year: the timestamps span no time")
    return (len(timestamps) - 1) / (span_s / SECONDS_PER_YEAR)


def annualisation(timestamps: pd.Series, configured: float | None) -> Annualisation:
    """The configured calendar if there is one, else what the bars show."""
    if configured is not None:
        return Annualisation(float(configured), "config")
    return Annualisation(observed_bars_per_year(timestamps), "observed")


def newey_west_standard_error(values: np.ndarray, lags: int) -> float:
    """Standard error of the mean with a Newey-West (HAC) variance, Bartlett weights.

    Overlapping h-bar labels make neighbouring rows' outcomes correlated: h - 1 lags
    cover the overlap. NaN with fewer than two values.
    """
    x = values.astype(np.float64)
    n = len(x)
    if n < 2:
        return math.nan
    e = x - x.mean()
    long_run = float(e @ e) / n
    for lag in range(1, min(lags, n - 1) + 1):
        weight = 1.0 - lag / (lags + 1.0)
        long_run += 2.0 * weight * float(e[lag:] @ e[:-lag]) / n
    return math.sqrt(max(long_run, 0.0) / n)


def classification_metrics(
    prob: np.ndarray, fwd_ret_h: np.ndarray, horizon_bars: int
) -> dict[str, Any]:
    """Accuracy at 0.5 and log loss against the majority-class baseline of the same rows."""
    directional = fwd_ret_h != 0
    y = (fwd_ret_h[directional] > 0).astype(np.float64)
    scored = prob[directional].astype(np.float64)
    counts = {
        "classified_bars": int(directional.sum()),
        "zero_return_bars": int((~directional).sum()),
    }
    if len(y) == 0:
        undefined = ("test_accuracy", "test_log_loss", "test_positive_rate", "majority_rate")
        return {
            **dict.fromkeys(undefined, math.nan),
            "majority_class": None,
            "accuracy_edge": math.nan,
            "accuracy_edge_se": math.nan,
            **counts,
        }
    p = np.clip(scored, _PROBABILITY_CLIP, 1 - _PROBABILITY_CLIP)
    positive_rate = float(np.mean(y))
    majority_class = 1 if positive_rate >= 0.5 else 0  # a tie goes to "up"
    correct = ((scored > 0.5) == (y == 1)).astype(np.float64)
    edge_per_bar = correct - (y == majority_class).astype(np.float64)
    return {
        "test_accuracy": float(np.mean(correct)),
        "test_log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        "test_positive_rate": positive_rate,
        "majority_class": majority_class,
        "majority_rate": max(positive_rate, 1.0 - positive_rate),
        "accuracy_edge": float(np.mean(edge_per_bar)),
        "accuracy_edge_se": newey_west_standard_error(edge_per_bar, horizon_bars - 1),
        **counts,
    }


def evaluate_test_span(
    rows: pd.DataFrame,
    prob: np.ndarray,
    rule: StrategyRule,
    costs: SymbolCosts,
    annual: Annualisation,
) -> dict[str, Any]:
    """Every test-span metric, flat, as written to metrics.json (NaN left for the caller).

    A symbol that is not tradable (an index) has its gross figures only: net ones NaN.
    """
    fwd_ret_1 = rows[FWD_RET_1].to_numpy(np.float64)
    bars_per_year = annual.bars_per_year
    cost = costs.cost_per_turnover_bps / BPS
    positions = rule.positions(prob, cost)
    gross = evaluate_strategy(positions, fwd_ret_1, 0.0, bars_per_year)
    net = evaluate_strategy(positions, fwd_ret_1, cost, bars_per_year)
    buy_hold = evaluate_strategy(np.ones_like(positions), fwd_ret_1, 0.0, bars_per_year)
    timestamps = rows[TIMESTAMP]
    return {
        **classification_metrics(prob, rows[FWD_RET_H].to_numpy(np.float64), rule.horizon_bars),
        "test_bars": len(rows),
        "test_days": _span_days(timestamps),
        "strategy": rule.name,
        "trades": trades(positions),
        "position_changes": position_changes(positions),
        "turnover_per_bar": float(np.mean(turnover(positions))) if len(rows) else math.nan,
        "long_fraction": float(np.mean(positions > 0)) if len(rows) else math.nan,
        "short_fraction": float(np.mean(positions < 0)) if len(rows) else math.nan,
        **gross.prefixed("gross"),
        **(net if costs.tradable else NOT_TRADABLE).prefixed("net"),
        **buy_hold.prefixed("buy_hold"),
        "edge_threshold_bps": rule.edge_cost_multiple * costs.cost_per_turnover_bps
        if rule.name == "cost_aware"
        else None,
        "train_mean_abs_return_h": rule.mean_abs_return_h,
        **cost_fields(costs),
        **annual.to_dict(),
    }


def cost_fields(costs: SymbolCosts) -> dict[str, Any]:
    """The costs the net figures were computed with, as metrics.json records them."""
    return {
        "cost_per_turnover_bps": costs.cost_per_turnover_bps,
        "taker_fee_bps": costs.taker_fee_bps,
        "half_spread_bps": costs.half_spread_bps,
        "half_spread_source": str(costs.half_spread_source),
        "asset_class": costs.asset_class,
        "tradable": costs.tradable,
    }


def _span_days(timestamps: pd.Series) -> float:
    if len(timestamps) == 0:
        return math.nan
    return float((timestamps.max() - timestamps.min()).total_seconds()) / _SECONDS_PER_DAY
