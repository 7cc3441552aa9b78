"""The promotion gate as a pure function: what it decides, and the reason it gives."""

from __future__ import annotations

from typing import Any

from retrainer.base.config import PromoteSettings, PromotionGuard, PromotionRule
from retrainer.registry.gate import Basis, Decision, PromoteMode, Promotion, decide

GOOD = {"test_log_loss": 0.680, "accuracy_edge": 0.020, "test_bars": 900}
CHAMPION = {"test_log_loss": 0.690, "accuracy_edge": 0.010, "test_bars": 900}


def judge(
    challenger: dict[str, Any],
    champion: dict[str, Any] | None = CHAMPION,
    mode: PromoteMode = "gated",
    settings: PromoteSettings | None = None,
    **kwargs: Any,
) -> Promotion:
    return decide(
        settings or PromoteSettings(),
        mode,
        challenger,
        champion,
        basis=Basis.RE_EVALUATED,
        champion_dir=None if champion is None else "models/X/20261130_020000Z",
        **kwargs,
    )


def test_a_first_model_becomes_champion_when_it_passes_the_floors() -> None:
    promotion = judge(GOOD, champion=None)
    assert promotion.decision is Decision.FIRST_MODEL and promotion.becomes_champion


def test_a_first_model_on_too_few_test_rows_is_not_promoted() -> None:
    promotion = judge({**GOOD, "test_bars": 20}, champion=None)
    assert promotion.decision is Decision.NOT_PROMOTED
    assert promotion.reason == "test rows 20 < min_test_rows 100"


def test_a_better_challenger_replaces_the_champion_and_says_by_how_much() -> None:
    promotion = judge(GOOD)
    assert promotion.decision is Decision.PROMOTED
    assert "test_log_loss 0.68 better than champion 0.69" in promotion.reason


def test_a_worse_challenger_keeps_the_champion_with_the_figures_in_the_reason() -> None:
    promotion = judge({**GOOD, "test_log_loss": 0.70})
    assert promotion.decision is Decision.KEPT_CHAMPION and not promotion.becomes_champion
    assert promotion.label == ("kept_champion (test_log_loss 0.7 worse than champion 0.69)")
    assert promotion.basis is Basis.RE_EVALUATED


def test_an_equal_challenger_is_not_worse_but_a_required_margin_keeps_the_champion() -> None:
    assert judge(CHAMPION).decision is Decision.PROMOTED
    margin = PromoteSettings(
        rules=[
            PromotionRule(
                metric="test_log_loss", greater_is_better=False, min_absolute_change=0.005
            )
        ]
    )
    kept = judge({**CHAMPION, "test_log_loss": 0.688}, settings=margin)
    assert kept.decision is Decision.KEPT_CHAMPION
    assert kept.reason == "test_log_loss 0.688 better than champion 0.69 by less than 0.005"


def test_a_relative_margin_is_a_share_of_the_champion_s_value() -> None:
    rules = [PromotionRule(metric="net_sharpe", min_relative_change=0.10)]
    settings = PromoteSettings(rules=rules, guards=[])
    assert (
        judge(
            {**GOOD, "net_sharpe": 1.05}, {**CHAMPION, "net_sharpe": 1.0}, settings=settings
        ).decision
        is Decision.KEPT_CHAMPION
    )
    assert (
        judge(
            {**GOOD, "net_sharpe": 1.11}, {**CHAMPION, "net_sharpe": 1.0}, settings=settings
        ).decision
        is Decision.PROMOTED
    )


def test_a_guard_that_degrades_past_its_tolerance_keeps_the_champion() -> None:
    promotion = judge({**GOOD, "accuracy_edge": -0.02})
    assert promotion.decision is Decision.KEPT_CHAMPION
    assert (
        promotion.reason == "guard accuracy_edge -0.02 worse than champion 0.01 by more than 0.02"
    )


def test_a_threshold_is_a_floor_for_every_challenger() -> None:
    rules = [PromotionRule(metric="test_log_loss", greater_is_better=False, threshold=0.685)]
    settings = PromoteSettings(rules=rules, guards=[PromotionGuard(metric="accuracy_edge")])
    promotion = judge({**GOOD, "test_log_loss": 0.686}, champion=None, settings=settings)
    assert promotion.decision is Decision.NOT_PROMOTED
    assert promotion.reason == "test_log_loss 0.686 is not <= threshold 0.685"


def test_a_metric_only_the_champion_lacks_never_locks_it_in_place() -> None:
    missing = judge({"test_bars": 900, "accuracy_edge": 0.02})
    assert missing.decision is Decision.KEPT_CHAMPION
    assert "test_log_loss missing for the challenger" in missing.reason
    old_champion = {"test_log_loss": 0.69, "n_test_rows": 900}  # from an older trainer
    assert judge(GOOD, old_champion).decision is Decision.PROMOTED


def test_a_challenger_that_does_not_verify_is_never_promoted_even_with_always() -> None:
    promotion = judge(GOOD, mode="always", challenger_problems=["model.bin: sha256 mismatch"])
    assert promotion.decision is Decision.KEPT_CHAMPION
    assert promotion.reason == "does not verify: model.bin: sha256 mismatch"


def test_a_champion_that_does_not_verify_is_replaced_by_one_that_does() -> None:
    promotion = judge({**GOOD, "test_log_loss": 0.9}, champion_problems=["model.bin: missing"])
    assert promotion.decision is Decision.PROMOTED
    assert promotion.reason == "champion does not verify: model.bin: missing"


def test_promote_always_and_never_skip_the_comparison() -> None:
    assert judge({**GOOD, "test_log_loss": 0.9}, mode="always").decision is Decision.PROMOTED
    never = judge(GOOD, mode="never")
    assert never.decision is Decision.KEPT_CHAMPION and never.reason.startswith("promotion off")
    assert judge(GOOD, champion=None, mode="never").decision is Decision.NOT_PROMOTED


def test_a_decision_round_trips_through_the_ledger_s_dict() -> None:
    promotion = judge({**GOOD, "test_log_loss": 0.70})
    assert Promotion.from_dict(promotion.to_dict()) == promotion


def test_a_metric_neither_model_has_is_not_compared_so_it_locks_nothing() -> None:
    rules = [PromotionRule(metric="net_sharpe", min_absolute_change=0.0)]  # null: not tradable
    settings = PromoteSettings(rules=rules, guards=[PromotionGuard(metric="net_total_return")])
    assert judge(GOOD, settings=settings).decision is Decision.PROMOTED


def test_a_trainer_that_reports_no_test_size_still_gets_a_first_model() -> None:
    promotion = judge({"test_log_loss": 0.69, "accuracy_edge": 0.0}, champion=None)
    assert promotion.decision is Decision.FIRST_MODEL


def test_a_broken_champion_is_replaced_only_by_a_challenger_that_passes_the_floors() -> None:
    broken = ["model.bin: missing"]
    thin = judge({**GOOD, "test_bars": 5}, champion_problems=broken)
    assert thin.decision is Decision.NOT_PROMOTED
    assert (
        thin.reason
        == "champion does not verify: model.bin: missing; test rows 5 < min_test_rows 100"
    )
    assert judge(GOOD, champion_problems=broken).decision is Decision.PROMOTED


def test_a_trainer_s_declared_rules_stand_in_for_the_defaults_the_config_left_alone() -> None:
    from retrainer.job.promotion import promote_settings_for
    from retrainer.training.quantile import train as quantile

    declared = promote_settings_for(PromoteSettings(), quantile)
    assert [r.metric for r in declared.rules] == ["pinball_mean"]
    assert [g.metric for g in declared.guards] == ["pinball_skill"]
    own = PromoteSettings(rules=[PromotionRule(metric="pinball_0.5_h1", greater_is_better=False)])
    kept = promote_settings_for(own, quantile)
    assert [r.metric for r in kept.rules] == ["pinball_0.5_h1"]  # the config's own rules win
    assert [g.metric for g in kept.guards] == ["pinball_skill"]  # the guards it left alone


def test_a_gated_night_of_the_quantile_trainer_compares_pinball_loss_out_of_the_box(
    tmp_path: Any, small_data: Any, run_cli: Any
) -> None:
    import json

    from tests.conftest import TINY_TRAINER, write_config

    config = write_config(
        tmp_path / "q.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": "BTCUSDT"},
            "data": {"path": str(small_data)},
            "trainer": {"plugin": "retrainer.training.quantile:train"},
            "trainer.params": TINY_TRAINER,
        },
    )
    assert run_cli("run", "--config", str(config)).returncode == 0
    assert run_cli("run", "--config", str(config), "--force").returncode == 0
    (status,) = (tmp_path / "root" / "runs").glob("*/status.json")
    promotion = json.loads(status.read_text())["symbols"]["BTCUSDT"]["promotion"]
    assert promotion["basis"] == "re-evaluated"
    assert {c["metric"] for c in promotion["checks"]} == {
        "test_rows",
        "pinball_mean",
        "pinball_skill",
    }
