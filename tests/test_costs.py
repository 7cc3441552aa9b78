"""Trading costs: the published Corwin-Schultz estimate, asset classes and overrides."""

from __future__ import annotations

import math
import subprocess
import sys
from typing import get_args

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from retrainer.base.config import AssetClass, CostSettings, FeeOverride
from retrainer.base.costs import (
    ASSET_CLASSES,
    HalfSpreadSource,
    SymbolCosts,
    corwin_schultz_half_spread_bps,
    resolve_costs,
)

FloatArray = npt.NDArray[np.float64]


def simulated_bars(
    n_bars: int, bar_vol: float, half_spread_bps: float, sub_steps: int = 400, seed: int = 0
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """A geometric random walk sampled finely: each bar's high is the path's maximum at
    the ask, its low the minimum at the bid, its close the mid (high, low, close)."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, bar_vol / math.sqrt(sub_steps), (n_bars, sub_steps))
    path = np.cumsum(steps.ravel()).reshape(n_bars, sub_steps)
    bar_open = np.concatenate([[0.0], path[:-1, -1]])
    high_mid = np.maximum(path.max(axis=1), bar_open)
    low_mid = np.minimum(path.min(axis=1), bar_open)
    half_spread = half_spread_bps / 1e4
    return (
        100.0 * np.exp(high_mid) * (1 + half_spread),
        100.0 * np.exp(low_mid) * (1 - half_spread),
        100.0 * np.exp(path[:, -1]),
    )


def frame_from(
    high: FloatArray, low: FloatArray, close: FloatArray | None = None, freq: str = "1h"
) -> pd.DataFrame:
    mid = np.sqrt(high * low) if close is None else close
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2026-01-01", periods=len(high), freq=freq, tz="UTC"),
            "open": mid,
            "high": high,
            "low": low,
            "close": mid,
            "volume": 1.0,
        }
    )


def bars_frame(
    n_bars: int = 24 * 100, half_spread_bps: float = 10.0, seed: int = 0
) -> pd.DataFrame:
    return frame_from(*simulated_bars(n_bars, 0.002, half_spread_bps, sub_steps=100, seed=seed))


# --- the estimator -------------------------------------------------------------------------


@pytest.mark.parametrize("true_bps", [2.0, 5.0, 10.0, 25.0, 50.0])
def test_corwin_schultz_recovers_a_known_half_spread(true_bps: float) -> None:
    high, low, close = simulated_bars(4000, bar_vol=0.002, half_spread_bps=true_bps)
    estimate = corwin_schultz_half_spread_bps(high, low, close)
    assert estimate.pairs == 3999
    assert estimate.half_spread_bps == pytest.approx(true_bps, abs=0.15 * true_bps + 0.5)


@pytest.mark.parametrize("bar_vol", [0.001, 0.004, 0.01])
def test_a_random_walk_without_spread_gives_about_zero(bar_vol: float) -> None:
    # Clipping each pair at 0 read about a fifth of the bar's volatility as spread;
    # averaging first leaves the estimator's known small upward bias (a few % of it).
    high, low, close = simulated_bars(4000, bar_vol=bar_vol, half_spread_bps=0.0, seed=2)
    estimate = corwin_schultz_half_spread_bps(high, low, close)
    assert 0.0 <= estimate.half_spread_bps < 0.05 * bar_vol * 1e4
    if bar_vol <= 0.004:  # hourly crypto, daily large caps: within a couple of bps
        assert estimate.half_spread_bps < 2.0


def test_a_wider_spread_gives_a_larger_estimate() -> None:
    estimates = [
        corwin_schultz_half_spread_bps(*simulated_bars(2000, 0.002, bps, seed=1)).half_spread_bps
        for bps in (2.0, 10.0, 40.0, 100.0)
    ]
    assert estimates == sorted(estimates)
    assert estimates[-1] > 20 * estimates[0]


def test_one_pair_matches_the_published_formula() -> None:
    high, low = np.array([101.0, 102.0]), np.array([99.0, 100.5])
    beta = math.log(101 / 99) ** 2 + math.log(102 / 100.5) ** 2
    gamma = math.log(102 / 99) ** 2
    k = 3 - 2 * math.sqrt(2)
    alpha = (math.sqrt(2 * beta) - math.sqrt(beta)) / k - math.sqrt(gamma / k)
    spread = 2 * (math.exp(alpha) - 1) / (1 + math.exp(alpha))
    estimate = corwin_schultz_half_spread_bps(high, low)
    assert estimate.pairs == 1
    assert estimate.raw_half_spread_bps == pytest.approx(spread / 2 * 1e4)
    assert estimate.half_spread_bps == pytest.approx(max(spread, 0.0) / 2 * 1e4)


def test_negative_pair_estimates_are_averaged_and_only_the_mean_is_clipped() -> None:
    # A big move between bars makes gamma large and that pair's estimate negative.
    high, low = np.array([101.0, 121.0, 122.0]), np.array([100.0, 120.0, 119.0])
    first = corwin_schultz_half_spread_bps(high[:2], low[:2])
    second = corwin_schultz_half_spread_bps(high[1:], low[1:])
    both = corwin_schultz_half_spread_bps(high, low)
    assert first.raw_half_spread_bps < 0 < second.raw_half_spread_bps
    assert both.raw_half_spread_bps == pytest.approx(
        (first.raw_half_spread_bps + second.raw_half_spread_bps) / 2
    )
    assert both.half_spread_bps == max(both.raw_half_spread_bps, 0.0)
    assert first.half_spread_bps == 0.0


def test_a_gap_up_shifts_the_next_bar_down_to_the_close_before_the_pair_is_used() -> None:
    # Bar 1 opens above bar 0's close (its low is 2 above it): the paper moves bar 1's
    # high and low down by the gap, so the pair sees no move between the bars.
    high, low, close = np.array([101.0, 105.0]), np.array([99.0, 103.0]), np.array([100.5, 104.0])
    adjusted = corwin_schultz_half_spread_bps(high, low, close)
    shifted = corwin_schultz_half_spread_bps(np.array([101.0, 102.5]), np.array([99.0, 100.5]))
    assert adjusted.raw_half_spread_bps == pytest.approx(shifted.raw_half_spread_bps)
    assert (
        adjusted.raw_half_spread_bps > corwin_schultz_half_spread_bps(high, low).raw_half_spread_bps
    )


def test_a_gap_down_shifts_the_next_bar_up_to_the_close() -> None:
    high, low, close = np.array([101.0, 97.0]), np.array([99.0, 95.0]), np.array([99.5, 96.0])
    adjusted = corwin_schultz_half_spread_bps(high, low, close)
    shifted = corwin_schultz_half_spread_bps(np.array([101.0, 99.5]), np.array([99.0, 97.5]))
    assert adjusted.raw_half_spread_bps == pytest.approx(shifted.raw_half_spread_bps)


def test_bars_inside_the_previous_close_are_not_adjusted() -> None:
    high, low, close = simulated_bars(200, 0.002, 10.0)
    # Continuous bars: each bar's range holds the previous close, so nothing shifts.
    with_close = corwin_schultz_half_spread_bps(high, low, close)
    assert with_close == corwin_schultz_half_spread_bps(high, low)


def test_degenerate_bars_are_left_out_with_their_pairs() -> None:
    high, low, close = simulated_bars(12, 0.001, 10.0)
    high[2] = low[2]  # flat: high == low
    high[5] = np.nan
    low[8] = -1.0
    high[10], low[10] = low[10], high[10]  # inverted
    estimate = corwin_schultz_half_spread_bps(high, low, close)
    # 11 pairs; each bad bar spoils the pair before and after it.
    assert estimate.pairs == 11 - 2 * 4


def test_constant_prices_give_no_usable_pair() -> None:
    flat = np.full(50, 3.0)
    assert corwin_schultz_half_spread_bps(flat, flat).pairs == 0


def test_fewer_than_two_bars_give_no_estimate() -> None:
    assert corwin_schultz_half_spread_bps(np.array([2.0]), np.array([1.0])).pairs == 0
    assert corwin_schultz_half_spread_bps(np.array([]), np.array([])).pairs == 0


def test_arrays_of_different_lengths_are_refused() -> None:
    with pytest.raises(ValueError, match="same length"):
        corwin_schultz_half_spread_bps(np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="close"):
        corwin_schultz_half_spread_bps(np.ones(3), np.ones(3), np.ones(2))


# --- the window and the fallback -------------------------------------------------------------


def test_the_spread_comes_from_the_last_window_days() -> None:
    wide = simulated_bars(24 * 60, 0.002, 80.0, sub_steps=100, seed=3)
    tight = simulated_bars(24 * 10, 0.002, 10.0, sub_steps=100, seed=4)
    # Join the two histories so that the tight-spread regime is the most recent.
    scale = wide[2][-1] / tight[2][0]
    high, low, close = (np.concatenate([w, t * scale]) for w, t in zip(wide, tight, strict=True))
    frame = frame_from(high, low, close)
    recent = resolve_costs("X", frame, CostSettings(spread_window_days=10))
    everything = resolve_costs("X", frame, CostSettings(spread_window_days=365))
    assert recent.spread_bars == 240
    assert everything.spread_bars == len(frame)
    assert recent.half_spread_bps == pytest.approx(10.0, abs=3.0)
    assert everything.half_spread_bps > 50.0


def test_the_default_window_is_ninety_days() -> None:
    frame = bars_frame(24 * 120)
    assert CostSettings().spread_window_days == 90
    assert resolve_costs("X", frame, CostSettings()).spread_bars == 24 * 90


def test_the_window_holds_at_least_min_spread_pairs_bars() -> None:
    daily = frame_from(*simulated_bars(300, 0.01, 20.0, sub_steps=100), freq="1D")
    costs = resolve_costs("X", daily, CostSettings(spread_window_days=5, min_spread_pairs=40))
    assert costs.spread_bars == 41
    assert costs.half_spread_source is HalfSpreadSource.CORWIN_SCHULTZ


def test_too_few_usable_pairs_fall_back_to_the_default_and_say_so() -> None:
    frame = bars_frame(15)
    costs = resolve_costs("X", frame, CostSettings())
    assert costs.half_spread_source is HalfSpreadSource.DEFAULT
    assert costs.half_spread_bps == ASSET_CLASSES["crypto"].default_half_spread_bps
    configured = resolve_costs("X", frame, CostSettings(default_half_spread_bps=1.25))
    assert configured.half_spread_bps == 1.25
    enough = resolve_costs("X", frame, CostSettings(min_spread_pairs=10))
    assert enough.half_spread_source is HalfSpreadSource.CORWIN_SCHULTZ


def test_flat_bars_count_as_no_pairs_and_fall_back() -> None:
    flat = frame_from(np.full(100, 3.0), np.full(100, 3.0))
    costs = resolve_costs("X", flat, CostSettings())
    assert (costs.half_spread_source, costs.spread_bars) == (HalfSpreadSource.DEFAULT, 0)


def test_a_known_half_spread_in_the_config_replaces_the_estimate() -> None:
    settings = CostSettings(overrides={"SPY": FeeOverride(half_spread_bps=0.3)})
    costs = resolve_costs("SPY", bars_frame(), settings)
    assert (costs.half_spread_bps, costs.half_spread_source) == (0.3, HalfSpreadSource.CONFIG)


# --- fees by asset class and overrides ---------------------------------------------------------


def test_the_asset_classes_of_the_config_are_those_with_defaults() -> None:
    assert set(get_args(AssetClass)) == set(ASSET_CLASSES)


def test_crypto_is_the_default_class_with_taker_10_and_maker_2() -> None:
    costs = resolve_costs("BTCUSDT", bars_frame(), CostSettings())
    assert (costs.asset_class, costs.taker_fee_bps, costs.maker_fee_bps) == ("crypto", 10.0, 2.0)
    assert costs.tradable


@pytest.mark.parametrize(
    ("asset_class", "taker", "tradable"),
    [("equity", 0.5, True), ("fx", 0.0, True), ("futures", 0.5, True), ("index", 0.0, False)],
)
def test_each_asset_class_has_its_own_fee_defaults(
    asset_class: AssetClass, taker: float, tradable: bool
) -> None:
    costs = resolve_costs("X", bars_frame(), CostSettings(asset_class=asset_class))
    assert (costs.asset_class, costs.taker_fee_bps, costs.tradable) == (
        asset_class,
        taker,
        tradable,
    )


def test_explicit_fees_override_the_class_defaults_of_the_default_class_only() -> None:
    settings = CostSettings(
        taker_fee_bps=7.5,
        maker_fee_bps=1.0,
        overrides={"EURUSD": FeeOverride(asset_class="fx")},
    )
    crypto = resolve_costs("BTCUSDT", bars_frame(), settings)
    fx = resolve_costs("EURUSD", bars_frame(), settings)
    assert (crypto.taker_fee_bps, crypto.maker_fee_bps) == (7.5, 1.0)
    assert (fx.asset_class, fx.taker_fee_bps, fx.maker_fee_bps) == ("fx", 0.0, 0.0)


def test_an_override_may_change_only_the_taker_fee() -> None:
    settings = CostSettings(
        taker_fee_bps=10.0, maker_fee_bps=2.0, overrides={"BTCUSDT": FeeOverride(taker_fee_bps=4.0)}
    )
    costs = resolve_costs("BTCUSDT", bars_frame(), settings)
    assert (costs.taker_fee_bps, costs.maker_fee_bps) == (4.0, 2.0)
    other = resolve_costs("ETHUSDT", bars_frame(), settings)
    assert (other.taker_fee_bps, other.maker_fee_bps) == (10.0, 2.0)


def test_an_override_may_set_a_zero_fee_or_a_maker_rebate() -> None:
    settings = CostSettings(
        overrides={"ETHUSDT": FeeOverride(taker_fee_bps=0.0, maker_fee_bps=-1.0)}
    )
    costs = resolve_costs("ETHUSDT", bars_frame(), settings)
    assert (costs.taker_fee_bps, costs.maker_fee_bps) == (0.0, -1.0)


def test_override_keys_match_regardless_of_case() -> None:
    settings = CostSettings(overrides={"solusdt": FeeOverride(taker_fee_bps=0.0)})
    assert resolve_costs("SOLUSDT", bars_frame(), settings).taker_fee_bps == 0.0


def test_an_index_is_not_tradable_unless_its_override_says_so() -> None:
    settings = CostSettings(
        overrides={
            "SPX": FeeOverride(asset_class="index"),
            "SPXETF": FeeOverride(asset_class="index", tradable=True),
            "HALTED": FeeOverride(tradable=False),
        }
    )
    assert not resolve_costs("SPX", bars_frame(), settings).tradable
    assert resolve_costs("SPXETF", bars_frame(), settings).tradable
    assert not resolve_costs("HALTED", bars_frame(), settings).tradable


def test_a_configured_calendar_travels_with_the_costs() -> None:
    settings = CostSettings(overrides={"SPY": FeeOverride(bars_per_year=252)})
    assert resolve_costs("SPY", bars_frame(), settings).bars_per_year == 252
    assert resolve_costs("QQQ", bars_frame(), settings).bars_per_year is None


def test_cost_per_turnover_adds_the_taker_fee_and_the_half_spread() -> None:
    costs = resolve_costs("X", bars_frame(half_spread_bps=20.0), CostSettings(taker_fee_bps=10.0))
    assert costs.cost_per_turnover_bps == pytest.approx(10.0 + costs.half_spread_bps)
    assert costs.half_spread_bps > 10


# --- SymbolCosts as a dict (how it reaches an attempt's process) --------------------------------


def test_symbol_costs_round_trip_through_a_dict() -> None:
    costs = SymbolCosts(
        "SPY",
        0.5,
        0.0,
        0.8,
        62,
        half_spread_source=HalfSpreadSource.DEFAULT,
        asset_class="equity",
        tradable=False,
        bars_per_year=252.0,
    )
    as_dict = costs.to_dict()
    assert as_dict["cost_per_turnover_bps"] == 1.3
    assert as_dict["half_spread_source"] == "default"
    assert SymbolCosts.from_dict(as_dict) == costs


def test_a_dict_written_before_the_new_keys_loads_as_a_tradable_crypto_estimate() -> None:
    old = {
        "symbol": "BTCUSDT",
        "taker_fee_bps": 10.0,
        "maker_fee_bps": 2.0,
        "half_spread_bps": 3.5,
        "spread_bars": 720,
        "cost_per_turnover_bps": 13.5,
    }
    costs = SymbolCosts.from_dict(old)
    assert costs == SymbolCosts("BTCUSDT", 10.0, 2.0, 3.5, 720)
    assert costs.half_spread_source is HalfSpreadSource.CORWIN_SCHULTZ
    assert (costs.asset_class, costs.tradable, costs.bars_per_year) == ("crypto", True, None)


def test_importing_costs_imports_no_numpy_pandas_or_pydantic() -> None:
    code = (
        "import sys, retrainer.base.costs\n"
        "heavy = {'numpy', 'pandas', 'pydantic'} & set(sys.modules)\n"
        "sys.exit(sorted(heavy) or 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
