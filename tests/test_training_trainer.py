"""The default trainer end to end: artifacts, determinism, reuse of partials on a retry."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from retrainer.base.artifacts import FINAL_ARTIFACTS, PARTIAL_ARTIFACTS
from retrainer.base.errors import BadInputError
from retrainer.training.contract import load_trainer, validate_trainer_params
from retrainer.training.params import TrainerParams
from retrainer.training.trainer import ohlcv_values_sha256, train
from tests.support.training_data import TINY_PARAMS, EventLog, make_context


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
