"""The test-span strategy on hand-made probabilities and returns."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retrainer.training.strategy import (
    StrategyRule,
    cost_aware_positions,
    evaluate_strategy,
    position_changes,
    sharpe_ratio,
    sharpe_standard_error,
    sign_positions,
    strategy_pnl,
    trades,
    turnover,
)


def test_sign_positions_are_long_above_one_half_and_short_otherwise() -> None:
    assert sign_positions(np.array([0.9, 0.5, 0.1, 0.51])).tolist() == [1.0, -1.0, -1.0, 1.0]


def test_turnover_starts_from_flat_and_charges_the_final_exit() -> None:
    positions = np.array([1.0, 1.0, -1.0, -1.0, 1.0])
    assert turnover(positions).tolist() == [1.0, 0.0, 2.0, 0.0, 2.0 + 1.0]
    assert turnover(np.array([0.0, 0.0])).tolist() == [0.0, 0.0]


def test_trades_count_the_entry_every_change_and_the_final_exit() -> None:
    positions = np.array([1.0, 1.0, -1.0, -1.0, 1.0])
    assert trades(positions) == 1 + 2 + 1
    assert position_changes(positions) == 2
    assert trades(np.array([0.0, 1.0, 1.0, 0.0])) == 2
    assert trades(np.zeros(5)) == 0


def test_known_positions_give_known_net_return_with_the_exit_paid() -> None:
    positions = np.array([1.0, 1.0, -1.0, -1.0])
    fwd = np.array([0.01, 0.02, -0.03, 0.01])
    cost = 10 / 1e4  # 10 bps per unit of turnover
    # gross: 0.01 + 0.02 + 0.03 - 0.01 = 0.05; turnover 1 + 0 + 2 + (0 + 1 exit) = 4 units
    assert strategy_pnl(positions, fwd, cost) == pytest.approx([0.009, 0.02, 0.028, -0.011])
    result = evaluate_strategy(positions, fwd, cost, bars_per_year=8766)
    assert result.total_return == pytest.approx(math.expm1(0.046))


def test_the_cost_aware_rule_stays_flat_when_the_edge_does_not_clear_the_cost() -> None:
    prob = np.array([0.55, 0.45, 0.52, 0.6])
    # Expected 4-bar return (2p - 1) * 1 % is at most 0.2 %: under a 0.3 % threshold.
    positions = cost_aware_positions(prob, mean_abs_return_h=0.01, threshold=0.003, horizon_bars=4)
    assert positions.tolist() == [0.0, 0.0, 0.0, 0.0]


def test_the_cost_aware_rule_holds_a_position_for_the_horizon_it_predicts() -> None:
    # Long on a strong signal, a strong short signal 2 bars later is ignored: the long was
    # entered for 3 bars. From bar 3 on it may flip.
    prob = np.array([0.9, 0.1, 0.1, 0.1, 0.5, 0.9])
    positions = cost_aware_positions(prob, mean_abs_return_h=0.01, threshold=0.001, horizon_bars=3)
    assert positions.tolist() == [1.0, 1.0, 1.0, -1.0, -1.0, -1.0]


def test_the_cost_aware_rule_keeps_its_position_when_the_signal_fades() -> None:
    prob = np.array([0.1, 0.5, 0.5, 0.52, 0.48, 0.5])
    positions = cost_aware_positions(prob, mean_abs_return_h=0.01, threshold=0.002, horizon_bars=2)
    assert positions.tolist() == [-1.0] * 6


def test_a_higher_cost_means_fewer_trades() -> None:
    rng = np.random.default_rng(0)
    prob = np.clip(0.5 + rng.normal(0.0, 0.1, 2000), 0.0, 1.0)
    counts = [
        trades(cost_aware_positions(prob, 0.01, threshold, horizon_bars=4))
        for threshold in (0.0, 0.001, 0.002, 0.004)
    ]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] > 3 * counts[-1] > 0


def test_the_rule_picks_sign_or_cost_aware_by_name() -> None:
    prob = np.array([0.51, 0.49, 0.51])
    sign = StrategyRule("sign", horizon_bars=4, mean_abs_return_h=0.01)
    cost_aware = StrategyRule("cost_aware", horizon_bars=4, mean_abs_return_h=0.01)
    assert sign.positions(prob, cost_per_turnover=0.001).tolist() == [1.0, -1.0, 1.0]
    # 2 x 10 bps = 0.2 % against an expected 0.02 %: no trade.
    assert cost_aware.positions(prob, cost_per_turnover=0.001).tolist() == [0.0, 0.0, 0.0]


def test_sharpe_is_annualised_mean_over_sample_std() -> None:
    pnl = np.array([0.01, -0.005, 0.02, 0.0])
    expected = pnl.mean() / pnl.std(ddof=1) * math.sqrt(252)
    assert sharpe_ratio(pnl, 252) == pytest.approx(expected)
    assert math.isnan(sharpe_ratio(np.array([0.01, 0.01]), 252))
    assert math.isnan(sharpe_ratio(np.array([0.01]), 252))


def test_a_strategy_that_never_trades_has_a_sharpe_of_zero() -> None:
    assert sharpe_ratio(np.zeros(100), 252) == 0.0
    assert sharpe_standard_error(np.zeros(100), 252) == pytest.approx(math.sqrt(252 / 100))


def test_sharpe_standard_error_is_lo_2002_for_iid_returns() -> None:
    rng = np.random.default_rng(1)
    pnl = rng.normal(0.001, 0.01, 500)
    per_bar = pnl.mean() / pnl.std(ddof=1)
    expected = math.sqrt((1 + per_bar**2 / 2) / 500) * math.sqrt(252)
    assert sharpe_standard_error(pnl, 252) == pytest.approx(expected)


def test_sharpe_standard_error_matches_the_spread_of_sharpes_on_iid_returns() -> None:
    rng = np.random.default_rng(2)
    samples = rng.normal(0.0005, 0.01, (400, 252))
    sharpes = [sharpe_ratio(row, 252) for row in samples]
    errors = [sharpe_standard_error(row, 252) for row in samples]
    assert float(np.std(sharpes)) == pytest.approx(float(np.mean(errors)), rel=0.15)
