"""End to end: the real `retrainer` command on a small generated data set."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from retrainer.base.clock import now_utc, run_day
from tests.conftest import TINY_TRAINER, RunCli, read_json, write_config

FINAL = {"model.bin", "config.json", "metrics.json", "sha256.txt"}
PARTIAL = {"features.parquet", "split_indices.json", "training_log.json"}
SYMBOLS = "top3"


@pytest.fixture
def config(tmp_path: Path, small_data: Path) -> Path:
    return write_config(
        tmp_path / "retrainer.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": SYMBOLS, "retries": 1},
            "data": {"path": str(small_data)},
            "trainer": {"params": TINY_TRAINER},
            "storage": {"kind": "local", "path": str(tmp_path / "mirror")},
        },
    )


def tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")} if folder.exists() else set()


def model_folders(root: Path) -> list[Path]:
    return sorted(p for p in (root / "models").glob("*/*") if p.is_dir())


def test_a_nightly_run_writes_the_whole_output_layout(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 0, result.stderr
    root, day = tmp_path / "root", run_day(now_utc())
    status = read_json(root / "runs" / day / "status.json")
    costs = read_json(root / "runs" / day / "costs.json")
    summary = read_json(root / "summary" / day / "engine_summary.json")
    symbols = sorted(summary["by_symbol"])
    assert len(symbols) == 3
    assert sorted(status["symbols"]) == symbols == sorted(costs["symbols"])
    assert summary["succeeded"] == 3 and summary["failed"] == 0 and summary["skipped"] == 0
    for key in ("total_symbols", "avg_train_minutes", "median_train_minutes", "total_wall_minutes"):
        assert summary[key] is not None
    for symbol in symbols:
        entry = status["symbols"][symbol]
        assert entry["state"] == "success" and entry["upload"] == "uploaded"
        folder = root / entry["artifact_dir"]
        assert {p.name for p in folder.iterdir() if not p.name.startswith(".")} == FINAL | PARTIAL
        assert (root / "logs" / day / symbol / "worker.log").is_file()
        assert summary["by_symbol"][symbol]["metrics"]["net_sharpe"] is not None
        mirrored = tmp_path / "mirror" / entry["artifact_dir"] / "model.bin"
        assert mirrored.read_bytes() == (folder / "model.bin").read_bytes()


def test_every_artifact_verifies_with_sha256sum(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    assert run_cli("run", "--config", str(config)).returncode == 0
    for folder in model_folders(tmp_path / "root"):
        check = subprocess.run(
            ["sha256sum", "--check", "--strict", "sha256.txt"],
            cwd=folder,
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert check.stdout.count(": OK") == len(FINAL | PARTIAL) - 1


def test_the_engine_log_carries_the_named_events(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    assert run_cli("run", "--config", str(config)).returncode == 0
    log = (tmp_path / "root" / "logs" / run_day(now_utc()) / "engine.log").read_text()
    for event in (
        "job_started",
        "coin_started",
        "coin_partial_saved",
        "coin_succeeded",
        "upload_succeeded",
        "job_completed",
    ):
        assert f'"event": "{event}"' in log, event


def test_a_second_run_the_same_day_skips_every_symbol(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    assert run_cli("run", "--config", str(config)).returncode == 0
    before = model_folders(tmp_path / "root")
    again = run_cli("run", "--config", str(config))
    assert again.returncode == 0, again.stderr
    summary = read_json(tmp_path / "root" / "summary" / run_day(now_utc()) / "engine_summary.json")
    assert summary["skipped"] == 3 and summary["succeeded"] == 0
    assert model_folders(tmp_path / "root") == before


def test_force_retrains_every_symbol(tmp_path: Path, config: Path, run_cli: RunCli) -> None:
    assert run_cli("run", "--config", str(config)).returncode == 0
    before = model_folders(tmp_path / "root")
    assert run_cli("run", "--config", str(config), "--force").returncode == 0
    after = model_folders(tmp_path / "root")
    assert len(after) == 2 * len(before)
    summary = read_json(tmp_path / "root" / "summary" / run_day(now_utc()) / "engine_summary.json")
    assert summary["succeeded"] == 3 and summary["skipped"] == 0


def test_a_corrupted_artifact_makes_its_symbol_run_again(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    assert run_cli("run", "--config", str(config)).returncode == 0
    victim = model_folders(tmp_path / "root")[0]
    model = victim / "model.bin"
    corrupted = bytearray(model.read_bytes())
    corrupted[len(corrupted) // 2] ^= 0xFF
    model.write_bytes(bytes(corrupted))
    plan = run_cli("run", "--config", str(config), "--dry_run")
    assert "sha256 mismatch" in plan.stdout
    assert run_cli("run", "--config", str(config)).returncode == 0
    summary = read_json(tmp_path / "root" / "summary" / run_day(now_utc()) / "engine_summary.json")
    assert summary["succeeded"] == 1 and summary["skipped"] == 2
    assert summary["by_symbol"][victim.parent.name]["status"] == "success"


def test_dry_run_prints_the_plan_and_writes_nothing(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    before = tree(tmp_path)
    result = run_cli("run", "--config", str(config), "--dry_run", "--mode", "sequential")
    assert result.returncode == 0, result.stderr
    assert tree(tmp_path) == before
    assert "sequential" in result.stdout and "not trained today" in result.stdout
    assert result.stdout.count(" run ") >= 3
    # Off a terminal (a pipe, a cron log): plain aligned columns, no box drawing.
    header = next(line for line in result.stdout.splitlines() if line.startswith("symbol"))
    assert header.split() == [
        "symbol",
        "action",
        "why",
        "taker",
        "bps",
        "maker",
        "bps",
        "half-spread",
        "bps",
        "cost/turnover",
        "bps",
        "champion",
        "last",
        "bar",
        "start",  # its place in the queue (longest first)
        "expected",  # its expected duration, from past ledgers ("new": none)
    ]
    assert not set("│┃━─") & set(result.stdout)


def test_a_bad_symbol_stops_the_run_with_exit_2_naming_it(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    for spec, named in (("B@D", "B@D"), ("NOPE1", "NOPE1")):
        result = run_cli("run", "--config", str(config), "--symbols", spec)
        assert result.returncode == 2
        assert named in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "root" / "models").exists()


@pytest.mark.parametrize("flag", ["--max_concurrent", "--max-concurrent"])
def test_flags_accept_underscores_and_dashes(config: Path, run_cli: RunCli, flag: str) -> None:
    result = run_cli("run", "--config", str(config), "--dry_run", flag, "3")
    assert result.returncode == 0, result.stderr
    assert "max_concurrent 3" in result.stdout


def test_every_mode_produces_the_same_metrics_per_symbol(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    metrics: dict[str, dict[str, bytes]] = {}
    for mode in ("sequential", "parallel", "hybrid"):
        root = tmp_path / mode
        config = write_config(
            tmp_path / f"{mode}.toml",
            {
                "run": {"root": str(root), "symbols": SYMBOLS, "mode": mode},
                "data": {"path": str(small_data)},
                "trainer": {"params": TINY_TRAINER},
            },
        )
        assert run_cli("run", "--config", str(config)).returncode == 0
        metrics[mode] = {
            p.parent.name: (p / "metrics.json").read_bytes() for p in model_folders(root)
        }
    assert len(metrics["sequential"]) == 3
    assert metrics["sequential"] == metrics["parallel"] == metrics["hybrid"]
