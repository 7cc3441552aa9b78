"""Test-span metrics: classification quality and a long/short sign strategy, gross and net.

Pure functions on numpy arrays. Returns are log returns: per-bar pnl is
`position_t * fwd_ret_1_t` (the position is taken at bar t's close and held for the next
bar), costs are subtracted per bar as `|position_t - position_{t-1}| * cost` with the
position before the span taken as flat (so the first entry pays), and a total return is
`exp(sum of pnl) - 1`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

SECONDS_PER_YEAR = 365.25 * 24 * 3600
_PROBABILITY_CLIP = 1e-7


def classification_metrics(prob: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Accuracy at 0.5, log loss (probabilities clipped away from 0 and 1), base rate."""
    p = np.clip(prob.astype(np.float64), _PROBABILITY_CLIP, 1 - _PROBABILITY_CLIP)
    y = target.astype(np.float64)
    predicted = (prob > 0.5).astype(np.float64)
    return {
        "accuracy": float(np.mean(predicted == y)),
        "log_loss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))),
        "positive_rate": float(np.mean(y)),
    }


def sign_positions(prob: np.ndarray) -> np.ndarray:
    """+1 (long) where P(up) > 0.5, else -1 (short)."""
    return np.where(prob > 0.5, 1.0, -1.0)


def bars_per_year(timestamps: pd.Series) -> float:
    """From the median spacing, so a few missing bars do not skew the annualisation."""
    spacing_s = timestamps.diff().dropna().dt.total_seconds()
    median_s = float(spacing_s.median()) if len(spacing_s) else float("nan")
    if not median_s > 0:
        raise ValueError("cannot infer bar spacing: need two or more increasing timestamps")
    return SECONDS_PER_YEAR / median_s


def turnover(positions: np.ndarray) -> np.ndarray:
    """|position change| per bar, starting from flat."""
    return np.abs(np.diff(positions.astype(np.float64), prepend=0.0))


def position_changes(positions: np.ndarray) -> int:
    """How many times the position differs from the bar before (the initial entry excluded)."""
    return int(np.count_nonzero(np.diff(positions)))


def sharpe_ratio(pnl: np.ndarray, periods_per_year: float) -> float:
    """Annualised mean/std of per-bar pnl; NaN when undefined (fewer than 2 bars, flat pnl)."""
    if len(pnl) < 2:
        return math.nan
    std = float(np.std(pnl, ddof=1))
    if not std > 0:
        return math.nan
    return float(np.mean(pnl)) / std * math.sqrt(periods_per_year)


@dataclass(frozen=True)
class StrategyResult:
    total_return: float
    sharpe: float
    mean_turnover_per_bar: float
    position_changes: int

    def prefixed(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_total_return": self.total_return,
            f"{prefix}_sharpe": self.sharpe,
        }


def strategy_pnl(
    positions: np.ndarray, fwd_ret_1: np.ndarray, cost_per_turnover: float
) -> np.ndarray:
    """Per-bar log pnl net of `cost_per_turnover` (a fraction: bps / 1e4) per unit turnover."""
    gross = positions.astype(np.float64) * fwd_ret_1.astype(np.float64)
    return gross - turnover(positions) * cost_per_turnover


def evaluate_strategy(
    positions: np.ndarray,
    fwd_ret_1: np.ndarray,
    cost_per_turnover: float,
    periods_per_year: float,
) -> StrategyResult:
    pnl = strategy_pnl(positions, fwd_ret_1, cost_per_turnover)
    return StrategyResult(
        total_return=math.expm1(float(np.sum(pnl))),
        sharpe=sharpe_ratio(pnl, periods_per_year),
        mean_turnover_per_bar=float(np.mean(turnover(positions))),
        position_changes=position_changes(positions),
    )


def evaluate_test_span(
    prob: np.ndarray,
    target: np.ndarray,
    fwd_ret_1: np.ndarray,
    cost_per_turnover_bps: float,
    periods_per_year: float,
) -> dict[str, Any]:
    """Every test-span metric, flat, as written to metrics.json (NaN left for the caller)."""
    positions = sign_positions(prob)
    cost = cost_per_turnover_bps / 1e4
    gross = evaluate_strategy(positions, fwd_ret_1, 0.0, periods_per_year)
    net = evaluate_strategy(positions, fwd_ret_1, cost, periods_per_year)
    buy_hold = evaluate_strategy(np.ones_like(positions), fwd_ret_1, 0.0, periods_per_year)
    return {
        **{f"test_{k}": v for k, v in classification_metrics(prob, target).items()},
        **gross.prefixed("gross"),
        **net.prefixed("net"),
        "turnover_per_bar": gross.mean_turnover_per_bar,
        "position_changes": gross.position_changes,
        "long_fraction": float(np.mean(positions > 0)),
        "cost_per_turnover_bps": cost_per_turnover_bps,
        "bars_per_year": periods_per_year,
        **buy_hold.prefixed("buy_hold"),
    }
