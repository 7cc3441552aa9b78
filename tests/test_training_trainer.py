"""The default trainer end to end: artifacts, determinism, reuse of partials on a retry."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import retrainer.training.trainer as trainer_module
from retrainer.base.artifacts import FINAL_ARTIFACTS, PARTIAL_ARTIFACTS
from retrainer.base.errors import BadInputError
from retrainer.training.contract import load_trainer, validate_trainer_params
from retrainer.training.features import FWD_RET_1, build_features
from retrainer.training.loaded import LoadedModel
from retrainer.training.params import TrainerParams
from retrainer.training.trainer import evaluate, load, ohlcv_values_sha256, train
from tests.support.training_data import TINY_PARAMS, EventLog, make_bars, make_context


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_every_artifact_is_written_and_metrics_match_the_return(tmp_path: Path) -> None:
    events = EventLog()
    metrics = train(make_context(tmp_path, emit=events))
    for name in (*PARTIAL_ARTIFACTS, *FINAL_ARTIFACTS):
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert events.artifacts("coin_partial_saved") == list(PARTIAL_ARTIFACTS)
    assert [e for e, _ in events.events][-1] == "coin_trained"
    for key in (
        "test_accuracy",
        "test_log_loss",
        "gross_sharpe",
        "net_sharpe",
        "net_total_return",
        "turnover_per_bar",
        "buy_hold_sharpe",
    ):
        assert key in metrics


def test_config_records_what_is_needed_to_reproduce(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    train(ctx)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["data_sha256"] == ohlcv_values_sha256(ctx.data)
    assert config["params"]["hidden_sizes"] == TINY_PARAMS["hidden_sizes"]
    assert config["seed"] == 42 and config["device"] == "cpu"
    assert config["features"][0] == "ret_1"
    split = json.loads((tmp_path / "split_indices.json").read_text())
    assert config["split"] == split


def test_same_seed_twice_gives_identical_metrics_bytes(tmp_path: Path) -> None:
    train(make_context(tmp_path / "a"))
    train(make_context(tmp_path / "b"))
    for name in ("metrics.json", "model.bin", "training_log.json", "features.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_metrics_do_not_depend_on_the_thread_count(tmp_path: Path) -> None:
    params = {**TINY_PARAMS, "hidden_sizes": [64, 32], "batch_size": 256}
    torch.set_num_threads(1)
    train(make_context(tmp_path / "one", params=params))
    torch.set_num_threads(2)
    train(make_context(tmp_path / "two", params=params))
    for name in ("metrics.json", "model.bin"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def test_a_retry_reuses_verified_partials_and_gets_the_same_metrics(tmp_path: Path) -> None:
    first = train(make_context(tmp_path / "first"))
    events = EventLog()
    second = train(make_context(tmp_path / "second", reuse_dir=tmp_path / "first", emit=events))
    assert events.artifacts("coin_partial_reused") == ["features.parquet", "split_indices.json"]
    assert events.artifacts("coin_partial_saved") == ["training_log.json"]
    assert second == first


def test_a_corrupted_partial_is_not_reused(tmp_path: Path) -> None:
    train(make_context(tmp_path / "first"))
    corrupted = tmp_path / "first" / "features.parquet"
    corrupted.write_bytes(corrupted.read_bytes()[:-10] + b"0123456789")
    events = EventLog()
    train(make_context(tmp_path / "second", reuse_dir=tmp_path / "first", emit=events))
    assert events.artifacts("coin_partial_reused") == ["split_indices.json"]
    assert "features.parquet" in events.artifacts("coin_partial_saved")
    assert (tmp_path / "second" / "features.parquet").read_bytes() != corrupted.read_bytes()


def test_partials_from_other_inputs_are_not_reused(tmp_path: Path) -> None:
    train(make_context(tmp_path / "first", partial_key="old"))
    events = EventLog()
    train(
        make_context(
            tmp_path / "second", reuse_dir=tmp_path / "first", emit=events, partial_key="new"
        )
    )
    assert events.artifacts("coin_partial_reused") == []


def test_params_are_validated_through_the_contract() -> None:
    trainer = load_trainer("retrainer.training.trainer:train")
    assert getattr(trainer, "params_model", None) is TrainerParams
    assert validate_trainer_params(trainer, {"horizon_bars": 8})["embargo_bars"] == 24
    for bad in (
        {"horizon_bars": 48},
        {"hidden_size": [3]},
        {"dropout": 1.5},
        {"train_fraction": 0.9},
        {"return_lags": [1, 1]},
    ):
        with pytest.raises(BadInputError, match="trainer.params"):
            validate_trainer_params(trainer, bad)


def test_importing_the_trainer_does_not_import_torch() -> None:
    code = "import sys, retrainer.training.trainer; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- what metrics.json reports ------------------------------------------------------------------

# Read by the promotion gate, the report and the notifications (docs/trainer.md).
REPORTED_KEYS = (
    "test_accuracy",
    "test_log_loss",
    "majority_rate",
    "majority_class",
    "accuracy_edge",
    "accuracy_edge_se",
    "gross_sharpe",
    "gross_sharpe_se",
    "net_sharpe",
    "net_sharpe_se",
    "gross_total_return",
    "net_total_return",
    "buy_hold_total_return",
    "buy_hold_sharpe",
    "bars_per_year",
    "bars_per_year_source",
    "test_bars",
    "test_days",
    "n_test_rows",
    "trades",
    "zero_return_bars",
    "half_spread_bps",
    "half_spread_source",
    "tradable",
    "strategy",
)


def test_metrics_report_the_baseline_the_errors_the_calendar_and_the_costs(
    tmp_path: Path,
) -> None:
    metrics = train(make_context(tmp_path))
    assert set(REPORTED_KEYS) <= set(metrics)
    assert metrics["accuracy_edge"] == pytest.approx(
        metrics["test_accuracy"] - metrics["majority_rate"]
    )
    assert (metrics["bars_per_year"], metrics["bars_per_year_source"]) == (8766.0, "observed")
    assert metrics["test_bars"] == metrics["n_test_rows"] == 192
    assert metrics["test_days"] == pytest.approx(191 / 24)
    assert metrics["strategy"] == "cost_aware"
    assert (metrics["half_spread_bps"], metrics["tradable"]) == (1.5, True)


def test_a_configured_calendar_annualises_the_sharpe(tmp_path: Path) -> None:
    observed = train(
        make_context(tmp_path / "observed", params={**TINY_PARAMS, "strategy": "sign"})
    )
    ctx = make_context(tmp_path / "config", params={**TINY_PARAMS, "strategy": "sign"})
    ctx = replace(ctx, costs=replace(ctx.costs, bars_per_year=252.0))
    configured = train(ctx)
    assert configured["bars_per_year_source"] == "config"
    assert configured["gross_sharpe"] == pytest.approx(
        observed["gross_sharpe"] * math.sqrt(252 / 8766)
    )


def test_the_strategy_is_a_param_and_leaves_the_model_alone(tmp_path: Path) -> None:
    sign = train(make_context(tmp_path / "sign", params={**TINY_PARAMS, "strategy": "sign"}))
    cost_aware = train(make_context(tmp_path / "cost_aware"))
    assert (sign["strategy"], cost_aware["strategy"]) == ("sign", "cost_aware")
    assert sign["long_fraction"] + sign["short_fraction"] == 1.0  # always in the market
    assert sign["trades"] >= cost_aware["trades"]
    assert sign["test_log_loss"] == cost_aware["test_log_loss"]  # the same model


def test_rows_with_a_zero_forward_return_are_not_fitted_and_are_counted(tmp_path: Path) -> None:
    bars = make_bars()
    # Flat prices for a stretch of the training span: 4-bar returns of exactly 0.
    bars.loc[300:340, ["open", "high", "low", "close"]] = float(bars["close"].iloc[300])
    metrics = train(make_context(tmp_path, bars=bars))
    assert metrics["zero_return_fit_rows"] == 41 - 4


def test_a_feature_that_peeks_one_bar_ahead_makes_test_accuracy_jump(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = {**TINY_PARAMS, "horizon_bars": 1, "max_epochs": 40, "patience_epochs": 40}
    honest = train(make_context(tmp_path / "honest", params=params))

    def peeking(bars: pd.DataFrame, params: TrainerParams) -> pd.DataFrame:
        frame = build_features(bars, params)
        frame.insert(1, "peek", frame[FWD_RET_1])  # the next bar's return: a leak
        return frame

    monkeypatch.setattr(trainer_module, "build_features", peeking)
    leaky = train(make_context(tmp_path / "leaky", params=params))
    assert honest["accuracy_edge"] <= 3 * honest["accuracy_edge_se"]
    assert leaky["test_accuracy"] > honest["test_accuracy"] + 0.2
    assert leaky["accuracy_edge"] > 5 * leaky["accuracy_edge_se"]


# --- the hooks: evaluate and load ---------------------------------------------------------------

SPAN_KEYS = [k for k in REPORTED_KEYS if k not in ("n_test_rows",)]


def test_the_hooks_are_attached_to_train() -> None:
    trainer = load_trainer("retrainer.training.trainer:train")
    assert getattr(trainer, "evaluate", None) is evaluate
    assert getattr(trainer, "load", None) is load


def test_a_model_evaluated_on_its_own_test_span_reports_its_own_metrics(tmp_path: Path) -> None:
    ctx = make_context(tmp_path / "model")
    metrics = train(ctx)
    again = evaluate(tmp_path / "model", ctx)
    assert again["evaluated_rows"] == metrics["test_bars"]
    for key in (*SPAN_KEYS, "n_train_rows", "best_epoch"):
        assert again[key] == pytest.approx(metrics[key]), key


def test_a_champion_is_scored_on_the_challengers_test_span_with_its_own_params(
    tmp_path: Path,
) -> None:
    champion_params = {**TINY_PARAMS, "hidden_sizes": [6], "return_lags": [1, 2, 4]}
    train(make_context(tmp_path / "champion", bars=make_bars(1200), params=champion_params))
    challenger = make_context(tmp_path / "challenger", bars=make_bars(1500))
    challenger_metrics = train(challenger)

    scored = evaluate(tmp_path / "champion", challenger)

    assert scored["evaluated_rows"] == challenger_metrics["test_bars"]
    assert set(REPORTED_KEYS) <= set(scored)
    assert scored["test_days"] == challenger_metrics["test_days"]
    assert scored["majority_rate"] == challenger_metrics["majority_rate"]  # same rows, labels
    assert scored["test_log_loss"] != challenger_metrics["test_log_loss"]  # another model


def test_a_champion_from_before_the_strategy_was_recorded_is_still_scored(
    tmp_path: Path,
) -> None:
    ctx = make_context(tmp_path / "model")
    metrics = train(ctx)
    config_path = tmp_path / "model" / "config.json"
    config = json.loads(config_path.read_text())
    del config["strategy"]
    config_path.write_text(json.dumps(config))
    scored = evaluate(tmp_path / "model", ctx)
    # Its return scale now comes from the rows before the test span, not its training span.
    assert scored["train_mean_abs_return_h"] > 0
    assert scored["train_mean_abs_return_h"] != metrics["train_mean_abs_return_h"]
    assert scored["test_log_loss"] == metrics["test_log_loss"]


def test_a_loaded_model_predicts_every_bar_with_history_including_the_latest(
    tmp_path: Path,
) -> None:
    ctx = make_context(tmp_path)
    metrics = train(ctx)
    model = load(tmp_path)
    assert isinstance(model, LoadedModel)
    assert model.params == TrainerParams.model_validate(TINY_PARAMS)
    assert model.metrics == metrics and model.config["symbol"] == "TESTUSDT"

    bars = ctx.data
    p_up = model.predict_proba(bars)
    assert p_up.index[-1] == bars["timestamp"].iloc[-1]  # no target needed to predict
    assert len(p_up) == len(bars) - 168
    assert ((p_up > 0) & (p_up < 1)).all()
    assert list(model.features(bars).columns) == ["timestamp", *model.feature_names]

    # The same probabilities as the test span was scored with.
    split = json.loads((tmp_path / "split_indices.json").read_text())["test"]
    test = p_up[split["first_timestamp"] : split["last_timestamp"]]
    frame = build_features(bars, model.params)
    up = frame.set_index("timestamp").loc[test.index, "target"].to_numpy() == 1
    assert float(np.mean((test.to_numpy() > 0.5) == up)) == pytest.approx(metrics["test_accuracy"])


def test_a_loaded_model_predicts_the_same_whatever_later_bars_do(tmp_path: Path) -> None:
    ctx = make_context(tmp_path)
    train(ctx)
    model = load(tmp_path)
    bars = ctx.data
    cut = 1200
    altered = bars.copy()
    altered.loc[cut:, ["open", "high", "low", "close"]] *= 1.5
    before = model.predict_proba(bars)
    after = model.predict_proba(altered)
    earlier = before.index < bars["timestamp"].iloc[cut]
    pd.testing.assert_series_equal(
        before[earlier], after[after.index < bars["timestamp"].iloc[cut]]
    )
    assert not before[~earlier].equals(after[~earlier])
