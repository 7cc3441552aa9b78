"""Test-span metrics: annualisation, the majority baseline and its standard error, the
zero-return rule, and what a non-tradable symbol reports."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from retrainer.base.costs import HalfSpreadSource, SymbolCosts
from retrainer.training.evaluate import (
    Annualisation,
    annualisation,
    classification_metrics,
    evaluate_test_span,
    newey_west_standard_error,
    observed_bars_per_year,
)
from retrainer.training.features import FWD_RET_1, FWD_RET_H, TIMESTAMP
from retrainer.training.strategy import StrategyRule

COSTS = SymbolCosts("X", taker_fee_bps=10.0, maker_fee_bps=2.0, half_spread_bps=1.5, spread_bars=90)
HOURLY = Annualisation(8766.0, "observed")


def rows_of(fwd_ret_1: list[float], fwd_ret_h: list[float] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            TIMESTAMP: pd.date_range("2026-01-01", periods=len(fwd_ret_1), freq="h", tz="UTC"),
            FWD_RET_1: fwd_ret_1,
            FWD_RET_H: fwd_ret_1 if fwd_ret_h is None else fwd_ret_h,
        }
    )


# --- annualisation ----------------------------------------------------------------------------


def test_bars_per_year_are_the_bars_observed_per_year_not_calendar_spacing() -> None:
    # Weekdays only: 261 a year, where the spacing (one day) said 365.
    weekdays = pd.Series(pd.bdate_range("2020-01-01", "2023-12-31", tz="UTC"))
    assert observed_bars_per_year(weekdays) == pytest.approx(261, abs=1)
    continuous = pd.Series(pd.date_range("2024-01-01", periods=2000, freq="h", tz="UTC"))
    assert observed_bars_per_year(continuous) == pytest.approx(8766.0)


def test_hourly_bars_of_a_five_day_market_are_about_6260_a_year() -> None:
    hours = pd.date_range("2021-01-04", "2022-12-30", freq="h", tz="UTC")
    trading = pd.Series(hours[hours.day_of_week < 5])
    assert observed_bars_per_year(trading) == pytest.approx(24 * 5 * 52.18, rel=0.01)


def test_missing_bars_lower_the_observed_rate() -> None:
    times = pd.Series(pd.date_range("2024-01-01", periods=1000, freq="h", tz="UTC"))
    with_gap = pd.concat([times.iloc[:400], times.iloc[600:]], ignore_index=True)
    assert observed_bars_per_year(with_gap) == pytest.approx(8766.0 * 799 / 999)


def test_too_few_timestamps_cannot_be_annualised() -> None:
    one = pd.Series(pd.date_range("2024-01-01", periods=1, freq="h", tz="UTC"))
    with pytest.raises(ValueError, match="two or more"):
        observed_bars_per_year(one)
    with pytest.raises(ValueError, match="no time"):
        observed_bars_per_year(pd.concat([one, one], ignore_index=True))


def test_a_configured_calendar_wins_and_says_so() -> None:
    times = pd.Series(pd.date_range("2024-01-01", periods=100, freq="D", tz="UTC"))
    assert annualisation(times, 252.0) == Annualisation(252.0, "config")
    assert annualisation(times, None).source == "observed"
    assert annualisation(times, 252.0).to_dict() == {
        "bars_per_year": 252.0,
        "bars_per_year_source": "config",
    }


# --- the baseline and its standard error --------------------------------------------------------


def test_classification_metrics_against_the_majority_class() -> None:
    prob = np.array([0.8, 0.3, 0.6, 0.1])
    fwd_h = np.array([0.01, -0.01, -0.02, -0.03])
    metrics = classification_metrics(prob, fwd_h, horizon_bars=1)
    assert metrics["test_accuracy"] == 0.75
    assert metrics["test_positive_rate"] == 0.25
    assert (metrics["majority_class"], metrics["majority_rate"]) == (0, 0.75)
    assert metrics["accuracy_edge"] == 0.0
    expected = -np.mean(np.log([0.8, 0.7, 0.4, 0.9]))
    assert metrics["test_log_loss"] == pytest.approx(expected)


def test_zero_forward_returns_are_left_out_of_the_classification_and_counted() -> None:
    prob = np.array([0.8, 0.9, 0.3, 0.2])
    fwd_h = np.array([0.01, 0.0, -0.01, 0.0])
    metrics = classification_metrics(prob, fwd_h, horizon_bars=1)
    assert (metrics["zero_return_bars"], metrics["classified_bars"]) == (2, 2)
    assert metrics["test_accuracy"] == 1.0
    assert metrics["test_positive_rate"] == 0.5


def test_a_span_of_zero_returns_only_has_no_classification_figures() -> None:
    metrics = classification_metrics(np.array([0.7, 0.2]), np.zeros(2), horizon_bars=4)
    assert math.isnan(metrics["test_accuracy"]) and metrics["majority_class"] is None
    assert metrics["zero_return_bars"] == 2


def test_newey_west_with_no_lags_is_the_iid_standard_error() -> None:
    x = np.random.default_rng(0).normal(size=300)
    assert newey_west_standard_error(x, 0) == pytest.approx(np.std(x) / math.sqrt(300))


def test_newey_west_weights_the_autocovariances_with_bartlett_weights() -> None:
    x = np.array([1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    e = x - x.mean()
    n = len(x)
    gamma = [float(e[lag:] @ e[: n - lag]) / n for lag in range(3)]
    long_run = gamma[0] + 2 * (2 / 3) * gamma[1] + 2 * (1 / 3) * gamma[2]
    assert newey_west_standard_error(x, 2) == pytest.approx(math.sqrt(long_run / n))
    assert math.isnan(newey_west_standard_error(np.array([1.0]), 2))


def test_the_edge_error_covers_overlapping_labels_where_the_iid_one_does_not() -> None:
    # A coin-flip model on a random walk, 4-bar labels that overlap: over many spans the
    # edge's spread is what the HAC error says, about sqrt(2.5) x the iid one.
    rng = np.random.default_rng(3)
    horizon, n = 4, 1000
    edges, hac, iid = [], [], []
    for _ in range(300):
        steps = rng.normal(size=n + horizon)
        fwd_h = np.convolve(steps, np.ones(horizon), mode="valid")[1 : n + 1]
        prob = 0.5 + 0.1 * np.convolve(rng.normal(size=n + horizon), np.ones(horizon), "valid")[:n]
        metrics = classification_metrics(prob, fwd_h, horizon)
        edges.append(metrics["accuracy_edge"])
        hac.append(metrics["accuracy_edge_se"])
        model_right = (prob > 0.5) == (fwd_h > 0)
        majority_right = (fwd_h > 0) == bool(metrics["majority_class"])
        iid.append(newey_west_standard_error(model_right.astype(float) - majority_right, 0))
    spread = float(np.std(edges))
    assert float(np.mean(hac)) == pytest.approx(spread, rel=0.2)
    assert float(np.mean(iid)) < 0.8 * spread


# --- the whole span ------------------------------------------------------------------------------


def test_the_span_report_has_the_baseline_the_errors_and_the_costs() -> None:
    rows = rows_of([0.01, 0.02, -0.03, 0.01], [0.01, 0.0, -0.03, 0.01])
    rule = StrategyRule("sign", horizon_bars=1, mean_abs_return_h=0.01)
    report = evaluate_test_span(rows, np.array([0.9, 0.9, 0.1, 0.1]), rule, COSTS, HOURLY)
    # gross 0.05; turnover 1 + 0 + 2 + 0 and the exit 1 = 4 units at 11.5 bps.
    assert report["gross_total_return"] == pytest.approx(math.expm1(0.05))
    assert report["net_total_return"] == pytest.approx(math.expm1(0.05 - 4 * 11.5e-4))
    assert report["buy_hold_total_return"] == pytest.approx(math.expm1(0.01))
    assert (report["trades"], report["position_changes"]) == (3, 1)
    assert report["turnover_per_bar"] == pytest.approx(1.0)
    assert (report["test_bars"], report["zero_return_bars"]) == (4, 1)
    assert report["test_days"] == pytest.approx(3 / 24)
    assert report["net_sharpe"] < report["gross_sharpe"]
    assert report["net_sharpe_se"] > 0 and report["gross_sharpe_se"] > 0
    assert report["half_spread_bps"] == 1.5 and report["half_spread_source"] == "corwin_schultz"
    assert report["tradable"] is True and report["cost_per_turnover_bps"] == 11.5
    assert (report["bars_per_year"], report["bars_per_year_source"]) == (8766.0, "observed")
    assert report["strategy"] == "sign" and report["edge_threshold_bps"] is None


def test_a_symbol_that_is_not_tradable_reports_gross_figures_and_no_net_ones() -> None:
    index = SymbolCosts("SPX", 0.0, 0.0, 0.0, 0, HalfSpreadSource.DEFAULT, "index", False)
    rule = StrategyRule("sign", horizon_bars=1, mean_abs_return_h=0.01)
    report = evaluate_test_span(
        rows_of([0.01, -0.02, 0.015]), np.array([0.9, 0.1, 0.8]), rule, index, HOURLY
    )
    assert report["tradable"] is False
    assert report["gross_total_return"] == pytest.approx(math.expm1(0.045))
    for key in ("net_total_return", "net_sharpe", "net_sharpe_se"):
        assert math.isnan(report[key]), key


def test_the_cost_aware_report_names_its_threshold() -> None:
    rule = StrategyRule("cost_aware", horizon_bars=2, mean_abs_return_h=0.02)
    report = evaluate_test_span(
        rows_of([0.01, 0.01, -0.01]), np.array([0.9, 0.5, 0.5]), rule, COSTS, HOURLY
    )
    assert report["edge_threshold_bps"] == pytest.approx(23.0)
    assert report["train_mean_abs_return_h"] == 0.02
    # (2 x 0.9 - 1) x 2 % = 1.6 % > 0.23 %: long, held to the end, exit paid.
    assert (report["trades"], report["long_fraction"]) == (2, 1.0)


def test_an_empty_span_reports_undefined_figures_without_failing() -> None:
    rule = StrategyRule("cost_aware", horizon_bars=4, mean_abs_return_h=0.01)
    report = evaluate_test_span(rows_of([]), np.array([]), rule, COSTS, HOURLY)
    assert (report["test_bars"], report["trades"]) == (0, 0)
    assert math.isnan(report["test_accuracy"]) and math.isnan(report["net_sharpe"])
