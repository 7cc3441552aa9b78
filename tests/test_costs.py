"""Trading costs: the Corwin-Schultz spread estimate and per-symbol fee overrides."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from retrainer.base.config import CostSettings, FeeOverride
from retrainer.base.costs import SymbolCosts, corwin_schultz_half_spread_bps, resolve_costs

FloatArray = npt.NDArray[np.float64]


def simulated_high_low(
    n_bars: int, bar_vol: float, half_spread_bps: float, sub_steps: int = 100, seed: int = 0
) -> tuple[FloatArray, FloatArray]:
    """A GBM mid-price sampled in sub-steps; each bar's high at the ask, low at the bid."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, bar_vol / math.sqrt(sub_steps), (n_bars, sub_steps))
    path = np.cumsum(steps.ravel()).reshape(n_bars, sub_steps)
    bar_open = np.concatenate([[0.0], path[:-1, -1]])
    high_mid = np.maximum(path.max(axis=1), bar_open)
    low_mid = np.minimum(path.min(axis=1), bar_open)
    half_spread = half_spread_bps / 1e4
    return 100.0 * np.exp(high_mid) * (1 + half_spread), 100.0 * np.exp(low_mid) * (1 - half_spread)


def frame_from(high: FloatArray, low: FloatArray, start: str = "2026-01-01") -> pd.DataFrame:
    mid = np.sqrt(high * low)
    return pd.DataFrame(
        {
            "timestamp": pd.date_range(start, periods=len(high), freq="1h", tz="UTC"),
            "open": mid,
            "high": high,
            "low": low,
            "close": mid,
            "volume": 1.0,
        }
    )


# --- the estimator -------------------------------------------------------------------------


@pytest.mark.parametrize("true_bps", [5.0, 10.0, 25.0, 50.0])
def test_corwin_schultz_recovers_a_known_half_spread(true_bps: float) -> None:
    # Per-bar volatility comparable to the spread: the regime the estimator is made for.
    high, low = simulated_high_low(4000, bar_vol=true_bps / 1e4, half_spread_bps=true_bps)
    estimate, pairs = corwin_schultz_half_spread_bps(high, low)
    assert pairs == 3999
    assert estimate == pytest.approx(true_bps, rel=0.15)


def test_a_wider_spread_gives_a_larger_estimate() -> None:
    estimates = [
        corwin_schultz_half_spread_bps(*simulated_high_low(2000, 0.002, bps, seed=1))[0]
        for bps in (2.0, 10.0, 40.0, 100.0)
    ]
    assert estimates == sorted(estimates)
    assert estimates[-1] > 5 * estimates[0]


def test_constant_prices_give_zero_spread() -> None:
    flat = np.full(50, 3.0)
    assert corwin_schultz_half_spread_bps(flat, flat) == (0.0, 49)


def test_a_random_walk_without_spread_gives_a_small_non_negative_estimate() -> None:
    high, low = simulated_high_low(3000, bar_vol=0.001, half_spread_bps=0.0, seed=2)
    estimate, _ = corwin_schultz_half_spread_bps(high, low)
    assert 0.0 <= estimate < 3.0


def test_one_pair_matches_the_published_formula() -> None:
    high, low = np.array([101.0, 102.0]), np.array([99.0, 100.5])
    beta = math.log(101 / 99) ** 2 + math.log(102 / 100.5) ** 2
    gamma = math.log(102 / 99) ** 2
    k = 3 - 2 * math.sqrt(2)
    alpha = (math.sqrt(2 * beta) - math.sqrt(beta)) / k - math.sqrt(gamma / k)
    spread = 2 * (math.exp(alpha) - 1) / (1 + math.exp(alpha))
    estimate, pairs = corwin_schultz_half_spread_bps(high, low)
    assert pairs == 1
    assert estimate == pytest.approx(max(spread, 0.0) / 2 * 1e4)


def test_negative_pair_estimates_count_as_zero_in_the_mean() -> None:
    # A big move between bars makes gamma large and that pair's estimate negative.
    high, low = np.array([101.0, 121.0, 122.0]), np.array([100.0, 120.0, 119.0])
    assert corwin_schultz_half_spread_bps(high[:2], low[:2])[0] == 0.0
    both, pairs = corwin_schultz_half_spread_bps(high, low)
    second_only, _ = corwin_schultz_half_spread_bps(high[1:], low[1:])
    assert pairs == 2
    assert both == pytest.approx(second_only / 2)


def test_bad_bars_are_left_out_of_the_pairs() -> None:
    high, low = simulated_high_low(10, 0.001, 10.0)
    high[4] = np.nan
    low[7] = -1.0
    _, pairs = corwin_schultz_half_spread_bps(high, low)
    assert pairs == 9 - 4  # each bad bar spoils the pair before and after it


def test_fewer_than_two_bars_give_no_estimate() -> None:
    assert corwin_schultz_half_spread_bps(np.array([2.0]), np.array([1.0])) == (0.0, 0)
    assert corwin_schultz_half_spread_bps(np.array([]), np.array([])) == (0.0, 0)


def test_high_and_low_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        corwin_schultz_half_spread_bps(np.ones(3), np.ones(4))


# --- resolving a symbol's costs ------------------------------------------------------------


def test_fees_come_from_the_settings_without_an_override() -> None:
    frame = frame_from(*simulated_high_low(100, 0.001, 10.0))
    costs = resolve_costs("BTCUSDT", frame, CostSettings(taker_fee_bps=7.5, maker_fee_bps=1.0))
    assert (costs.taker_fee_bps, costs.maker_fee_bps) == (7.5, 1.0)
    assert costs.symbol == "BTCUSDT"


def test_an_override_may_change_only_the_taker_fee() -> None:
    frame = frame_from(*simulated_high_low(100, 0.001, 10.0))
    settings = CostSettings(
        taker_fee_bps=10.0, maker_fee_bps=2.0, overrides={"BTCUSDT": FeeOverride(taker_fee_bps=4.0)}
    )
    costs = resolve_costs("BTCUSDT", frame, settings)
    assert (costs.taker_fee_bps, costs.maker_fee_bps) == (4.0, 2.0)
    other = resolve_costs("ETHUSDT", frame, settings)
    assert (other.taker_fee_bps, other.maker_fee_bps) == (10.0, 2.0)


def test_an_override_may_change_only_the_maker_fee_even_to_a_rebate() -> None:
    frame = frame_from(*simulated_high_low(100, 0.001, 10.0))
    settings = CostSettings(overrides={"ETHUSDT": FeeOverride(maker_fee_bps=-1.0)})
    costs = resolve_costs("ETHUSDT", frame, settings)
    assert (costs.taker_fee_bps, costs.maker_fee_bps) == (10.0, -1.0)


def test_override_keys_match_regardless_of_case() -> None:
    frame = frame_from(*simulated_high_low(100, 0.001, 10.0))
    settings = CostSettings(overrides={"solusdt": FeeOverride(taker_fee_bps=0.0)})
    assert resolve_costs("SOLUSDT", frame, settings).taker_fee_bps == 0.0


def test_the_spread_comes_from_the_last_window_days_only() -> None:
    wide = simulated_high_low(24 * 60, 0.002, 80.0, seed=3)
    tight = simulated_high_low(24 * 10, 0.002, 10.0, seed=4)
    # Join the two histories so that the tight-spread regime is the most recent.
    scale = wide[0][-1] / tight[0][0]
    high = np.concatenate([wide[0], tight[0] * scale])
    low = np.concatenate([wide[1], tight[1] * scale])
    frame = frame_from(high, low)
    recent = resolve_costs("X", frame, CostSettings(spread_window_days=10))
    everything = resolve_costs("X", frame, CostSettings(spread_window_days=365))
    assert recent.spread_bars == 240
    assert everything.spread_bars == len(frame)
    assert recent.half_spread_bps == pytest.approx(10.0, rel=0.3)
    assert everything.half_spread_bps > 50.0


def test_cost_per_turnover_adds_the_taker_fee_and_the_half_spread() -> None:
    frame = frame_from(*simulated_high_low(24 * 30, 0.002, 20.0))
    costs = resolve_costs("X", frame, CostSettings(taker_fee_bps=10.0))
    assert costs.cost_per_turnover_bps == pytest.approx(10.0 + costs.half_spread_bps)
    assert costs.half_spread_bps > 0


def test_a_frame_with_one_bar_has_no_spread_estimate() -> None:
    frame = frame_from(np.array([2.0]), np.array([1.0]))
    costs = resolve_costs("X", frame, CostSettings())
    assert (costs.half_spread_bps, costs.spread_bars) == (0.0, 0)


def test_symbol_costs_round_trip_through_a_dict() -> None:
    costs = SymbolCosts("BTCUSDT", 10.0, 2.0, 3.5, 720)
    as_dict = costs.to_dict()
    assert as_dict["cost_per_turnover_bps"] == 13.5
    assert SymbolCosts.from_dict(as_dict) == costs
