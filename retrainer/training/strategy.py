"""The test-span strategy: positions from P(up), their P&L gross and net of costs.

Pure functions on numpy arrays. Returns are log returns: the position of bar t is taken at
bar t's close and earns `fwd_ret_1_t` (bar t+1's log return). A unit of position change
costs `cost_per_turnover` (a fraction); the position before the span is flat and the one
left at its end is closed at the close after the last bar, so the first entry and the
final exit both pay. A total return is `exp(sum of pnl) - 1`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

StrategyName = Literal["cost_aware", "sign"]


@dataclass(frozen=True)
class StrategyRule:
    """How positions follow from the model's P(up) over `horizon_bars`."""

    name: StrategyName
    horizon_bars: int
    # E|fwd_ret_h| on the training span: turns 2p - 1 into an expected log return.
    mean_abs_return_h: float
    edge_cost_multiple: float = 2.0

    def positions(self, prob: np.ndarray, cost_per_turnover: float) -> np.ndarray:
        if self.name == "sign":
            return sign_positions(prob)
        return cost_aware_positions(
            prob,
            self.mean_abs_return_h,
            self.edge_cost_multiple * cost_per_turnover,
            self.horizon_bars,
        )


def sign_positions(prob: np.ndarray) -> np.ndarray:
    """+1 (long) where P(up) > 0.5, else -1 (short), at every bar."""
    return np.where(prob > 0.5, 1.0, -1.0)


def cost_aware_positions(
    prob: np.ndarray, mean_abs_return_h: float, threshold: float, horizon_bars: int
) -> np.ndarray:
    """Take a side only when the expected horizon return clears `threshold`, and hold it.

    The expected log return over the horizon is (2p - 1) * E|fwd_ret_h|. Flat at the
    start; a position entered is held `horizon_bars` bars (the horizon it was predicted
    for) before it is reconsidered; after that it changes only when the other side
    clears the threshold, and is kept otherwise.
    """
    expected = (2.0 * prob.astype(np.float64) - 1.0) * mean_abs_return_h
    signal = np.where(expected > threshold, 1.0, np.where(expected < -threshold, -1.0, 0.0))
    positions = np.empty(len(signal), dtype=np.float64)
    current, held = 0.0, horizon_bars
    for t, wanted in enumerate(signal.tolist()):
        if held >= horizon_bars and wanted != 0.0 and wanted != current:
            current, held = wanted, 0
        positions[t] = current
        held += 1
    return positions


def turnover(positions: np.ndarray) -> np.ndarray:
    """|position change| per bar from flat, the final exit added to the last bar."""
    changes = np.abs(np.diff(positions.astype(np.float64), prepend=0.0))
    if len(changes):
        changes[-1] += abs(float(positions[-1]))
    return changes


def trades(positions: np.ndarray) -> int:
    """Position changes, the entry from flat and the final exit included."""
    return int(np.count_nonzero(np.diff(positions, prepend=0.0, append=0.0)))


def position_changes(positions: np.ndarray) -> int:
    """How many times the position differs from the bar before (entry and exit excluded)."""
    return int(np.count_nonzero(np.diff(positions)))


def strategy_pnl(
    positions: np.ndarray, fwd_ret_1: np.ndarray, cost_per_turnover: float
) -> np.ndarray:
    """Per-bar log pnl net of `cost_per_turnover` (a fraction: bps / 1e4) per unit turnover."""
    gross = positions.astype(np.float64) * fwd_ret_1.astype(np.float64)
    return gross - turnover(positions) * cost_per_turnover


def sharpe_ratio(pnl: np.ndarray, bars_per_year: float) -> float:
    """Annualised mean/std of per-bar pnl: 0 for a strategy that never held a position
    (no pnl at all), NaN when undefined (fewer than 2 bars, constant non-zero pnl)."""
    per_bar = _per_bar_sharpe(pnl)
    return per_bar * math.sqrt(bars_per_year)


def sharpe_standard_error(pnl: np.ndarray, bars_per_year: float) -> float:
    """Lo (2002), i.i.d. returns: SE(SR) = sqrt((1 + SR_bar^2 / 2) / T), annualised.

    The i.i.d. form: a position held several bars makes the pnl autocorrelated, which
    this does not widen the error for.
    """
    per_bar = _per_bar_sharpe(pnl)
    if math.isnan(per_bar):
        return math.nan
    return math.sqrt((1.0 + per_bar**2 / 2.0) / len(pnl)) * math.sqrt(bars_per_year)


def _per_bar_sharpe(pnl: np.ndarray) -> float:
    if len(pnl) < 2:
        return math.nan
    if not np.any(pnl):
        return 0.0
    std = float(np.std(pnl, ddof=1))
    if not std > 0:
        return math.nan
    return float(np.mean(pnl)) / std


@dataclass(frozen=True)
class StrategyResult:
    total_return: float
    sharpe: float
    sharpe_se: float

    def prefixed(self, prefix: str) -> dict[str, Any]:
        return {
            f"{prefix}_total_return": self.total_return,
            f"{prefix}_sharpe": self.sharpe,
            f"{prefix}_sharpe_se": self.sharpe_se,
        }


NOT_TRADABLE = StrategyResult(math.nan, math.nan, math.nan)


def evaluate_strategy(
    positions: np.ndarray, fwd_ret_1: np.ndarray, cost_per_turnover: float, bars_per_year: float
) -> StrategyResult:
    pnl = strategy_pnl(positions, fwd_ret_1, cost_per_turnover)
    return StrategyResult(
        total_return=math.expm1(float(np.sum(pnl))),
        sharpe=sharpe_ratio(pnl, bars_per_year),
        sharpe_se=sharpe_standard_error(pnl, bars_per_year),
    )
