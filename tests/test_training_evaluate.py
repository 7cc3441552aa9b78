"""Evaluation arithmetic on hand-made position and return series."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from retrainer.training.evaluate import (
    bars_per_year,
    classification_metrics,
    evaluate_strategy,
    evaluate_test_span,
    position_changes,
    sharpe_ratio,
    sign_positions,
    strategy_pnl,
    turnover,
)


def test_positions_are_long_above_one_half_and_short_otherwise() -> None:
    assert sign_positions(np.array([0.9, 0.5, 0.1, 0.51])).tolist() == [1.0, -1.0, -1.0, 1.0]


def test_turnover_starts_from_flat_and_a_flip_costs_two() -> None:
    positions = np.array([1.0, 1.0, -1.0, -1.0, 1.0])
    assert turnover(positions).tolist() == [1.0, 0.0, 2.0, 0.0, 2.0]
    assert position_changes(positions) == 2


def test_known_positions_give_known_net_return() -> None:
    positions = np.array([1.0, 1.0, -1.0, -1.0])
    fwd = np.array([0.01, 0.02, -0.03, 0.01])
    cost = 10 / 1e4  # 10 bps per unit of turnover
    # gross: 0.01 + 0.02 + 0.03 - 0.01 = 0.05; turnover 1 + 0 + 2 + 0 = 3 units → 0.003
    assert strategy_pnl(positions, fwd, cost) == pytest.approx([0.009, 0.02, 0.028, -0.01])
    result = evaluate_strategy(positions, fwd, cost, periods_per_year=8766)
    assert result.total_return == pytest.approx(math.expm1(0.047))
    assert result.mean_turnover_per_bar == pytest.approx(0.75)
    assert result.position_changes == 1


def test_sharpe_is_annualised_mean_over_sample_std() -> None:
    pnl = np.array([0.01, -0.005, 0.02, 0.0])
    expected = pnl.mean() / pnl.std(ddof=1) * math.sqrt(8766)
    assert sharpe_ratio(pnl, 8766) == pytest.approx(expected)
    assert math.isnan(sharpe_ratio(np.array([0.01, 0.01]), 8766))
    assert math.isnan(sharpe_ratio(np.array([0.01]), 8766))


def test_bars_per_year_uses_the_median_spacing() -> None:
    times = pd.Series(pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC"))
    with_gap = pd.concat([times.iloc[:50], times.iloc[60:]], ignore_index=True)
    assert bars_per_year(with_gap) == pytest.approx(8766.0)
    with pytest.raises(ValueError, match="bar spacing"):
        bars_per_year(times.iloc[:1])


def test_classification_metrics() -> None:
    prob = np.array([0.8, 0.3, 0.6, 0.1])
    target = np.array([1, 0, 0, 0])
    metrics = classification_metrics(prob, target)
    assert metrics["accuracy"] == 0.75
    assert metrics["positive_rate"] == 0.25
    expected = -np.mean(np.log([0.8, 0.7, 0.4, 0.9]))
    assert metrics["log_loss"] == pytest.approx(expected)


def test_test_span_report_has_gross_net_and_buy_hold() -> None:
    prob = np.array([0.9, 0.9, 0.1, 0.1])
    fwd = np.array([0.01, 0.02, -0.03, 0.01])
    report = evaluate_test_span(
        prob, np.array([1, 1, 0, 1]), fwd, cost_per_turnover_bps=10.0, periods_per_year=8766
    )
    assert report["gross_total_return"] == pytest.approx(math.expm1(0.05))
    assert report["net_total_return"] == pytest.approx(math.expm1(0.047))
    assert report["buy_hold_total_return"] == pytest.approx(math.expm1(0.01))
    assert report["position_changes"] == 1
    assert report["turnover_per_bar"] == pytest.approx(0.75)
    assert report["net_sharpe"] < report["gross_sharpe"]
