"""Hung, crashing and misbehaving items fail alone, with a reason, and leave no process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from retrainer.base.artifacts import Layout
from retrainer.base.clock import now_utc, run_day
from retrainer.base.lock import RunLock
from tests.conftest import RunCli, cli_env, read_json, write_config
from tests.support.processes import assert_all_dead, recorded_pids, wait_for_pids


def faulty_config(
    tmp_path: Path, small_data: Path, behaviours: dict[str, str], slow_s: float = 3.0, **run: object
) -> Path:
    return write_config(
        tmp_path / "faulty.toml",
        {
            "run": {
                "root": str(tmp_path / "root"),
                "symbols": ",".join(behaviours),
                "retries": 0,
                "backoff_base_s": 0.05,
                "backoff_cap_s": 0.1,
                "kill_grace_s": 0.5,
                "stop_grace_s": 0.5,
                "timeout_minutes": 0.05,
                **run,
            },
            "data": {"path": str(small_data)},
            "trainer": {
                "plugin": "tests.support.plugins:faulty",
                "params": {
                    "pid_dir": str(tmp_path / "pids"),
                    "behaviours": behaviours,
                    "slow_s": slow_s,
                },
            },
        },
    )


def summary_of(tmp_path: Path) -> dict[str, Any]:
    summary: dict[str, Any] = read_json(
        tmp_path / "root" / "summary" / run_day(now_utc()) / "engine_summary.json"
    )
    return summary


def symbols_of(small_data: Path) -> list[str]:
    return sorted(p.stem for p in small_data.glob("*.parquet"))


def test_a_hung_item_is_killed_at_its_deadline_and_retried(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    hung, good = symbols_of(small_data)[:2]
    config = faulty_config(tmp_path, small_data, {hung: "hang", good: "ok"}, retries=1)
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 1, result.stderr
    summary = summary_of(tmp_path)
    assert summary["by_symbol"][good]["status"] == "success"
    item = summary["by_symbol"][hung]
    assert item["status"] == "timeout" and item["attempts"] == 2
    assert "timed out after 3 s" in item["reason"]
    status = read_json(tmp_path / "root" / "runs" / run_day(now_utc()) / "status.json")
    attempts = status["symbols"][hung]["attempts"]
    assert [a["state"] for a in attempts] == ["timeout", "timeout"]
    assert_all_dead(recorded_pids(tmp_path))


def test_the_whole_tree_dies_even_when_it_ignores_sigterm(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    stubborn, escapee = symbols_of(small_data)[:2]
    config = faulty_config(
        tmp_path, small_data, {stubborn: "hang_ignoring_term", escapee: "grandchild"}
    )
    assert run_cli("run", "--config", str(config)).returncode == 1
    pids = recorded_pids(tmp_path)
    assert len(pids) == 3  # two items and one grandchild in its own session
    assert_all_dead(pids)


def test_crashes_fail_alone_with_a_reason_that_names_what_happened(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    names = symbols_of(small_data)
    behaviours = dict(zip(names, ["raise", "exit3", "segfault", "garbage", "ok"], strict=True))
    config = faulty_config(tmp_path, small_data, behaviours, timeout_minutes=5)
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 1
    by_symbol = summary_of(tmp_path)["by_symbol"]
    reasons = {behaviours[s]: by_symbol[s].get("reason") for s in names}
    assert reasons["raise"].startswith("ValueError: boom from")
    assert "exited with code 3" in reasons["exit3"]
    assert "killed by SIGSEGV" in reasons["segfault"]
    assert "trainer returned int" in reasons["garbage"]
    assert by_symbol[names[4]]["status"] == "success"
    status = read_json(tmp_path / "root" / "runs" / run_day(now_utc()) / "status.json")
    raised = status["symbols"][names[0]]["attempts"][0]
    assert raised["error_type"] == "ValueError"
    assert any("plugins.py" in frame for frame in raised["stack"])
    assert_all_dead(recorded_pids(tmp_path))


def test_a_failed_attempt_is_retried_and_the_last_attempt_decides(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    flaky = symbols_of(small_data)[0]
    config = faulty_config(tmp_path, small_data, {flaky: "fail_once"}, retries=2)
    assert run_cli("run", "--config", str(config)).returncode == 0
    status = read_json(tmp_path / "root" / "runs" / run_day(now_utc()) / "status.json")
    entry = status["symbols"][flaky]
    assert [a["state"] for a in entry["attempts"]] == ["failed", "success"]
    assert entry["attempts"][0]["reason"] == "RuntimeError: first attempt fails"
    assert entry["state"] == "success"


def test_a_second_run_on_a_locked_root_exits_3_naming_the_holder(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = faulty_config(tmp_path, small_data, {symbols_of(small_data)[0]: "ok"})
    with RunLock(Layout(tmp_path / "root").lock_path(), "holder-run"):
        result = run_cli("run", "--config", str(config))
    assert result.returncode == 3
    assert f"pid {os.getpid()}" in result.stderr and "holder-run" in result.stderr
    assert run_cli("run", "--config", str(config)).returncode == 0


def start_scheduler(config: Path, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "retrainer", "run", "--config", str(config)],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_items_never_outlive_a_scheduler_killed_with_sigkill(
    tmp_path: Path, small_data: Path
) -> None:
    a, b, queued = symbols_of(small_data)[:3]
    config = faulty_config(
        tmp_path,
        small_data,
        {a: "hang", b: "hang_ignoring_term", queued: "ok"},
        timeout_minutes=10,
        max_concurrent=2,
    )
    scheduler = start_scheduler(config, tmp_path)
    pids = wait_for_pids(tmp_path, 2)
    # Everything it started: the items, the forkserver, the process that waits, forked
    # ahead of need, for the queued item.
    deadline = time.monotonic() + 30
    while (
        len(family := [p.pid for p in psutil.Process(scheduler.pid).children(recursive=True)])
        <= len(pids) + 1
    ):
        assert time.monotonic() < deadline, f"no warm process among {family}"
        time.sleep(0.05)
    scheduler.kill()
    scheduler.communicate()
    assert_all_dead([*pids, *family])
    status = read_json(tmp_path / "root" / "runs" / run_day(now_utc()) / "status.json")
    assert set(status["symbols"]) == {a, b, queued}


def test_sigterm_stops_gracefully_marks_items_interrupted_and_exits_130(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    names = symbols_of(small_data)
    behaviours = {names[0]: "hang", names[1]: "hang", names[2]: "ok"}
    config = faulty_config(tmp_path, small_data, behaviours, timeout_minutes=10)
    scheduler = start_scheduler(config, tmp_path)
    pids = wait_for_pids(tmp_path, 2)
    scheduler.send_signal(signal.SIGTERM)
    _, stderr = scheduler.communicate(timeout=30)
    assert scheduler.returncode == 130, stderr
    assert_all_dead(pids)
    summary = summary_of(tmp_path)
    states = {s: summary["by_symbol"][s]["status"] for s in behaviours}
    assert states[names[0]] == states[names[1]] == "interrupted"
    assert summary["exit_code"] == 130
    resumed = run_cli("run", "--config", str(config), "--dry_run")
    assert resumed.stdout.count("earlier run today") >= 2


@pytest.mark.parametrize("mode", ["sequential", "hybrid"])
def test_hybrid_slides_its_window_while_a_slow_item_runs(
    tmp_path: Path, small_data: Path, run_cli: RunCli, mode: str
) -> None:
    names = symbols_of(small_data)
    behaviours = {names[0]: "slow", **{n: "ok" for n in names[1:]}}
    # Long enough for the other four to pass through the second slot on a busy machine.
    config = faulty_config(
        tmp_path,
        small_data,
        behaviours,
        slow_s=8.0,
        mode=mode,
        max_concurrent=2,
        timeout_minutes=5,
    )
    assert run_cli("run", "--config", str(config)).returncode == 0
    status = read_json(tmp_path / "root" / "runs" / run_day(now_utc()) / "status.json")
    slow = status["symbols"][names[0]]["attempts"][0]
    started_during_slow = [
        n
        for n in names[1:]
        # The two first items may start within the same millisecond: <= on that side.
        if slow["started_at"]
        <= status["symbols"][n]["attempts"][0]["started_at"]
        < slow["ended_at"]
    ]
    if mode == "hybrid":  # the other slot kept turning over: no batch barrier
        assert len(started_during_slow) == len(names) - 1
    else:
        assert started_during_slow == []


def test_a_plugin_that_breaks_on_import_fails_its_items_with_the_real_error(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    (tmp_path / "brokenplugin.py").write_text(
        "raise AttributeError('broken at import')\ndef train(ctx): return {}\n"
    )
    config = write_config(
        tmp_path / "c.toml",
        {
            "run": {
                "root": str(tmp_path / "root"),
                "symbols": symbols_of(small_data)[0],
                "retries": 0,
            },
            "data": {"path": str(small_data)},
            "trainer": {"plugin": "brokenplugin:train"},
        },
    )
    result = run_cli(
        "run",
        "--config",
        str(config),
        env={"PYTHONPATH": f"{tmp_path}:{Path(__file__).parents[1]}"},
    )
    assert result.returncode == 2, result.stderr
    assert "brokenplugin" in result.stderr and "broken at import" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_retry_reuses_partial_outputs_only_when_they_verify(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    sound, torn = symbols_of(small_data)[:2]
    config = faulty_config(
        tmp_path,
        small_data,
        {sound: "partial_then_fail", torn: "corrupt_partial_then_fail"},
        retries=1,
    )
    assert run_cli("run", "--config", str(config)).returncode == 0
    by_symbol = summary_of(tmp_path)["by_symbol"]
    assert by_symbol[sound]["metrics"]["reused"] is True
    assert by_symbol[torn]["metrics"]["reused"] is False
    worker_log = tmp_path / "root" / "logs" / run_day(now_utc()) / sound / "worker.log"
    assert '"event": "coin_partial_reused"' in worker_log.read_text()
