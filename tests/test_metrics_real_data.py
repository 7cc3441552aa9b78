"""Reported figures on real bars: daily Google stock (2004-2013, 2,148 bars) and hourly
EURUSD (2017-2018, 5,000 bars), the files the `backtesting` package ships (dev extra)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from retrainer.base.config import CostSettings
from retrainer.base.costs import HalfSpreadSource, corwin_schultz_half_spread_bps, resolve_costs
from retrainer.training.contract import TrainContext
from retrainer.training.evaluate import observed_bars_per_year
from retrainer.training.trainer import train

pytest.importorskip("backtesting")

from bench.metrics_check import (  # noqa: E402  (needs backtesting's files)
    legacy_bars_per_year,
    legacy_half_spread_bps,
    load_backtesting_bars,
)


@pytest.fixture(scope="module")
def goog() -> pd.DataFrame:
    return load_backtesting_bars("GOOG.csv")


@pytest.fixture(scope="module")
def eurusd() -> pd.DataFrame:
    return load_backtesting_bars("EURUSD.csv")


def test_daily_stock_bars_are_about_252_a_year_not_365(goog: pd.DataFrame) -> None:
    assert 245 < observed_bars_per_year(goog["timestamp"]) < 256
    assert legacy_bars_per_year(goog["timestamp"]) == pytest.approx(365.25)


def test_hourly_fx_bars_are_about_24_times_5_days_a_year(eurusd: pd.DataFrame) -> None:
    # 24 h x 5 days x 52 weeks = 6,240, less holidays; calendar time said 8,766.
    assert 6000 < observed_bars_per_year(eurusd["timestamp"]) < 6300
    assert legacy_bars_per_year(eurusd["timestamp"]) == pytest.approx(8766.0)


def test_a_large_cap_stock_has_a_half_spread_of_a_few_bps(goog: pd.DataFrame) -> None:
    # GOOG's quoted spread was a cent or two on $200-800 (well under 1 bp a side).
    # Corwin-Schultz on daily bars reads a few % of the daily volatility (~2 %) as
    # spread on top: a few bps over the 90-day window, about 1 bp over 9 years. The
    # per-pair clipped mean read 20 bps and more.
    costs = resolve_costs("GOOG", goog, CostSettings(asset_class="equity"))
    old = legacy_half_spread_bps(goog["high"].to_numpy()[-63:], goog["low"].to_numpy()[-63:])
    whole = corwin_schultz_half_spread_bps(
        goog["high"].to_numpy(), goog["low"].to_numpy(), goog["close"].to_numpy()
    )
    assert costs.half_spread_source is HalfSpreadSource.CORWIN_SCHULTZ
    assert 60 <= costs.spread_bars <= 64  # 90 calendar days of trading days
    assert costs.half_spread_bps < 10.0
    assert whole.half_spread_bps < 3.0
    assert old > 15.0 and costs.half_spread_bps < old / 2


def test_eurusd_has_a_half_spread_under_a_bp(eurusd: pd.DataFrame) -> None:
    # EURUSD's spread is a fraction of a pip to a pip (1 pip ~ 0.9 bps): half under 1 bp.
    costs = resolve_costs("EURUSD", eurusd, CostSettings(asset_class="fx"))
    old = legacy_half_spread_bps(eurusd["high"].to_numpy()[-500:], eurusd["low"].to_numpy()[-500:])
    assert costs.half_spread_source is HalfSpreadSource.CORWIN_SCHULTZ
    assert 0.0 < costs.half_spread_bps < 1.0
    assert costs.half_spread_bps < old / 2
    assert costs.taker_fee_bps == 0.0


def train_on(bars: pd.DataFrame, name: str, asset_class: str, out: Path) -> dict[str, Any]:
    settings = CostSettings.model_validate({"asset_class": asset_class})
    ctx = TrainContext(
        symbol=name,
        data_source=lambda: bars,
        costs=resolve_costs(name, bars, settings),
        out_dir=out,
        seed=42,
        device="cpu",
        threads=1,
    )
    return dict(train(ctx))


def test_the_trainer_reports_plausible_baseline_figures_on_daily_google(
    goog: pd.DataFrame, tmp_path: Path
) -> None:
    metrics = train_on(goog, "GOOG", "equity", tmp_path)
    bars_per_year = metrics["bars_per_year"]
    assert metrics["bars_per_year_source"] == "observed"
    assert 245 < bars_per_year < 256
    # The last 15 % of 2,148 bars, less the features' history: ~290 bars, ~14 months.
    assert 250 < metrics["test_bars"] < 330
    assert 350 < metrics["test_days"] < 480
    # A bull market: most 4-day returns up, the baseline well above a coin.
    assert 0.5 < metrics["majority_rate"] < 0.7
    # Overlapping 4-day labels on ~290 bars: an error of 2-6 points, and no real edge.
    assert 0.015 < metrics["accuracy_edge_se"] < 0.06
    assert abs(metrics["accuracy_edge"]) < 3 * metrics["accuracy_edge_se"]
    # Lo (2002): about sqrt(252 / 290) ~ 0.93 for a Sharpe near 0.
    per_bar = metrics["net_sharpe"] / math.sqrt(bars_per_year)
    expected_se = math.sqrt((1 + per_bar**2 / 2) / metrics["test_bars"] * bars_per_year)
    assert metrics["net_sharpe_se"] == pytest.approx(expected_se)
    assert 0.8 < metrics["net_sharpe_se"] < 1.1


def test_the_trainer_reports_plausible_baseline_figures_on_hourly_eurusd(
    eurusd: pd.DataFrame, tmp_path: Path
) -> None:
    metrics = train_on(eurusd, "EURUSD", "fx", tmp_path)
    assert 6000 < metrics["bars_per_year"] < 6300
    assert 0.5 <= metrics["majority_rate"] < 0.6
    assert 0.01 < metrics["accuracy_edge_se"] < 0.05
    assert metrics["tradable"] is True and metrics["half_spread_source"] == "corwin_schultz"
