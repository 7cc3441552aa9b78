"""The other commands, the help texts and the exit codes."""

from __future__ import annotations

import tomllib
from pathlib import Path

from retrainer.base.clock import now_utc, run_day
from tests.conftest import TINY_TRAINER, RunCli, write_config


def test_run_help_lists_every_flag(run_cli: RunCli) -> None:
    result = run_cli("run", "--help", env={"COLUMNS": "200"})
    assert result.returncode == 0
    for flag in (
        "--mode",
        "--max_concurrent",
        "--symbols",
        "--timeout_minutes",
        "--retries",
        "--force",
        "--driver",
        "--dry_run",
        "--config",
        "--root",
        "--data",
    ):
        assert flag in result.stdout, flag


def test_config_init_writes_a_commented_config_that_loads(tmp_path: Path, run_cli: RunCli) -> None:
    target = tmp_path / "retrainer.toml"
    assert run_cli("config", "init", str(target)).returncode == 0
    text = target.read_text()
    assert text.count("#") > 20 and tomllib.loads(text)["run"]["mode"] == "hybrid"
    assert run_cli("config", "init", str(target)).returncode == 2  # never overwrite silently


def test_data_sample_writes_a_usable_universe(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("data", "sample", str(tmp_path / "bars"), "--symbols", "3", "--days", "60")
    assert result.returncode == 0, result.stderr
    assert len(list((tmp_path / "bars").glob("*.parquet"))) == 3
    plan = run_cli(
        "run",
        "--data",
        str(tmp_path / "bars"),
        "--root",
        str(tmp_path / "r"),
        "--symbols",
        "top2",
        "--dry_run",
        env={"RETRAINER_DATA__MIN_ROWS": "100"},
    )
    assert plan.returncode == 0, plan.stderr


def test_an_unknown_mode_is_a_usage_error(run_cli: RunCli) -> None:
    result = run_cli("run", "--mode", "fastest")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_verify_reports_a_tampered_artifact(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = write_config(
        tmp_path / "c.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": "top1"},
            "data": {"path": str(small_data)},
            "trainer": {"params": TINY_TRAINER},
        },
    )
    assert run_cli("run", "--config", str(config)).returncode == 0
    assert run_cli("verify", "--config", str(config)).returncode == 0
    metrics = next((tmp_path / "root" / "models").glob("*/*/metrics.json"))
    metrics.write_text("{}")
    result = run_cli("verify", "--config", str(config), "--run", run_day(now_utc()))
    assert result.returncode == 1
    assert "metrics.json: sha256 mismatch" in result.stdout


def test_verify_without_a_run_is_bad_input(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("verify", "--root", str(tmp_path), "--run", "20200101Z")
    assert result.returncode == 2 and "no run ledger" in result.stderr
