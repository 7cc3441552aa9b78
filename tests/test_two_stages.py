"""Two stages ([run] two_stage): prepare on CPU slots of its own, then train on the
window's slots, reusing the prepare's partial outputs; one stage unchanged when off."""

from __future__ import annotations

import math
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import Layout
from retrainer.base.clock import now_utc, run_day
from retrainer.base.config import Settings
from retrainer.base.resources import Resources
from retrainer.ledger.entries import ItemState, LedgerEntry
from retrainer.ledger.journal import read_ledger
from retrainer.plan.policy import resolve_policy
from retrainer.views.history import symbol_history
from retrainer.views.report.data import gather
from tests.conftest import TINY_TRAINER, RunCli, read_json, write_config

CPU = Resources(cpu_count=8, gpu_count=0, memory_mb=16_000, cuda_visible_devices=None)
GPU = Resources(cpu_count=16, gpu_count=1, memory_mb=64_000, cuda_visible_devices=None)


def _policy(resources: Resources, has_prepare: bool = True, **run: Any) -> Any:
    settings = Settings.model_validate({"run": {"max_concurrent": 2, **run}})
    return resolve_policy(settings, resources, runnable=20, has_prepare=has_prepare)


def test_auto_takes_two_stages_on_a_gpu_machine_only_for_a_trainer_with_prepare() -> None:
    assert not _policy(CPU).two_stage  # auto on CPU: one stage
    assert _policy(CPU).prepare_slots == 0
    on_gpu = _policy(GPU)
    assert on_gpu.two_stage and on_gpu.prepare_slots == 14  # the cores the window leaves
    assert on_gpu.threads_per_item == on_gpu.prepare_threads == 1
    assert not _policy(GPU, has_prepare=False).two_stage
    assert not _policy(GPU, two_stage="off").two_stage
    forced = _policy(CPU, two_stage="on", prepare_slots=3)
    assert (forced.two_stage, forced.prepare_slots, forced.window) == (True, 3, 2)
    assert "two stages: 3 prepare slots" in forced.concurrency_why


def _config(
    tmp_path: Path,
    data: Path,
    symbols: list[str],
    train_s: float = 0.0,
    faults: bool = True,
    **run: Any,
) -> Path:
    behaviours = {symbols[0]: "prepare_fails_once", symbols[1]: "train_fails_once"}
    behaviours = behaviours if faults else {}
    return write_config(
        tmp_path / "c.toml",
        {
            "run": {
                "root": str(tmp_path / "root"),
                "symbols": ",".join(symbols),
                "max_concurrent": 1,
                "retries": 1,
                "backoff_base_s": 0.05,
                "backoff_cap_s": 0.1,
                **run,
            },
            "data": {"path": str(data)},
            "trainer": {
                "plugin": "tests.support.stages:staged",
                "params": {
                    "marker_dir": str(tmp_path / "markers"),
                    "behaviours": behaviours,
                    "train_s": train_s,
                },
            },
        },
    )


def _entries(tmp_path: Path) -> dict[str, LedgerEntry]:
    layout, day = Layout(tmp_path / "root"), run_day(now_utc())
    state = read_ledger(layout.status_path(day), layout.journal_path(day))
    return dict(state.entries)


def _symbols(data: Path) -> list[str]:
    return sorted(p.stem for p in data.glob("*.parquet"))[:3]


def test_each_item_is_prepared_then_trained_reusing_its_partials(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    symbols = _symbols(small_data)
    config = _config(tmp_path, small_data, symbols, two_stage="on", prepare_slots=2)
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 0, result.stderr
    entries = _entries(tmp_path)
    stages = {s: [(a.stage, a.state) for a in entries[s].attempts] for s in symbols}
    ok, failed = ItemState.SUCCESS, ItemState.FAILED
    # A failed prepare is retried as a prepare; a failed train as a train (retries = 1:
    # the prepare that succeeded spent no retry).
    assert stages[symbols[0]] == [("prepare", failed), ("prepare", ok), ("train", ok)]
    assert stages[symbols[1]] == [("prepare", ok), ("train", failed), ("train", ok)]
    assert stages[symbols[2]] == [("prepare", ok), ("train", ok)]
    day = run_day(now_utc())
    engine_log = (tmp_path / "root" / "logs" / day / "engine.log").read_text()
    for symbol in symbols:
        entry = entries[symbol]
        assert entry.state is ItemState.SUCCESS and entry.metrics is not None
        assert entry.metrics["reused"] is True
        assert entry.artifact_dir == entry.attempts[-1].artifact_dir  # the train's folder
        assert entry.promotion is not None and entry.promotion["decision"] == "first_model"
        # Promoted once: the prepare's success told no listener.
        promoted = [
            line for line in engine_log.splitlines() if "model_promoted" in line and symbol in line
        ]
        assert len(promoted) == 1
        prepares = [a for a in entry.attempts if a.stage == "prepare"]
        assert all(a.device == "cpu" and a.slot is not None and a.slot >= 1 for a in prepares)
        assert all(a.slot == 0 for a in entry.attempts if a.stage == "train")
        worker_log = tmp_path / "root" / "logs" / day / symbol / "worker.log"
        assert '"event": "coin_partial_reused"' in worker_log.read_text()
    assert engine_log.count('"event": "coin_prepared"') == 3
    # The report's timeline: prepares on the prepare slots (1, 2), trains on the device's (0).
    bars = gather(tmp_path / "root", day).bars
    assert {(b.state, b.lane) for b in bars if b.state == "prepared"} <= {
        ("prepared", 1),
        ("prepared", 2),
    }
    assert len([b for b in bars if b.state == "prepared"]) == 3
    assert {b.lane for b in bars if b.state == "success"} == {0}
    history = symbol_history(tmp_path / "root", symbols[2])
    assert [(r.attempt, r.status) for r in history] == [(1, "prepared"), (2, "success")]
    summary = read_json(tmp_path / "root" / "summary" / day / "engine_summary.json")
    assert summary["exit_code"] == 0


def test_off_runs_one_stage_as_before(tmp_path: Path, small_data: Path, run_cli: RunCli) -> None:
    symbols = _symbols(small_data)
    config = _config(tmp_path, small_data, symbols, two_stage="off")
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 0, result.stderr
    entries = _entries(tmp_path)
    # The prepare_fails_once item never runs prepare: one stage, one attempt each.
    assert [len(entries[s].attempts) for s in symbols] == [1, 2, 1]
    for symbol in symbols:
        entry = entries[symbol]
        assert entry.state is ItemState.SUCCESS
        assert all(a.stage is None for a in entry.attempts)
        assert "stage" not in entry.attempts[0].to_dict()
    assert entries[symbols[0]].metrics == {"symbol": symbols[0], "value": 1.0, "reused": False}
    # The train_fails_once item's retry reused what its failed attempt saved, as ever.
    retried = entries[symbols[1]].metrics
    assert retried is not None and retried["reused"] is True


def test_the_default_trainer_prepares_features_and_split_for_its_train_stage(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    symbols = _symbols(small_data)[:2]
    config = write_config(
        tmp_path / "c.toml",
        {
            "run": {
                "root": str(tmp_path / "root"),
                "symbols": ",".join(symbols),
                "max_concurrent": 1,
                "two_stage": "on",
                "prepare_slots": 1,
            },
            "data": {"path": str(small_data)},
            "trainer": {"params": TINY_TRAINER},
        },
    )
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 0, result.stderr
    entries, day = _entries(tmp_path), run_day(now_utc())
    for symbol in symbols:
        entry = entries[symbol]
        assert entry.state is ItemState.SUCCESS
        assert [a.stage for a in entry.attempts] == ["prepare", "train"]
        prepare_dir = tmp_path / "root" / entry.attempts[0].artifact_dir
        assert (prepare_dir / "features.parquet").is_file()
        assert not (prepare_dir / "sha256.txt").exists()  # not a model: no manifest
        worker_log = (tmp_path / "root" / "logs" / day / symbol / "worker.log").read_text()
        reused = [line for line in worker_log.splitlines() if "coin_partial_reused" in line]
        for name in ("features.parquet", "split_indices.json"):
            assert any(f'"artifact": "{name}"' in line for line in reused), name


def test_prepared_items_whose_train_never_started_are_not_started_at_the_deadline(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    symbols = _symbols(small_data)
    at = math.ceil(time.time() + 10.0)  # room for a loaded machine to start the night
    deadline = datetime.fromtimestamp(at).strftime("%H:%M:%S")
    train_s = at - time.time() + 2.0  # the first train runs past the deadline
    config = _config(tmp_path, small_data, symbols, train_s, False, two_stage="on", prepare_slots=3)
    result = run_cli("run", "--config", str(config), "--deadline", deadline, "--order", "plan")
    assert result.returncode == 4, result.stderr
    day = run_day(now_utc())
    summary = read_json(tmp_path / "root" / "summary" / day / "engine_summary.json")
    by_symbol = summary["by_symbol"]
    # All three prepared at once; the first prepared (in the order they finish) trains
    # past the deadline and finishes in the stop grace; the other two never trained.
    (trained,) = [s for s in symbols if by_symbol[s]["status"] == "success"]
    for symbol in set(symbols) - {trained}:
        item = by_symbol[symbol]
        assert item["status"] == "not_started" and item["attempts"] == 1
        assert item["reason"] == f"not started: deadline {deadline} passed"
        entry = _entries(tmp_path)[symbol]
        assert entry.state is ItemState.PENDING
        assert [a.stage for a in entry.attempts] == ["prepare"]
    assert summary["not_started"] == 2
