"""The run survives items that hog memory, leave processes behind, fill the disk, and a
scheduler that is stopped, stopped twice, or dies mid-run."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from retrainer.base.artifacts import Layout
from retrainer.base.clock import now_utc, run_day
from retrainer.ledger.journal import read_ledger
from tests.conftest import RunCli, cli_env, read_json
from tests.support.processes import assert_all_dead, recorded_pids, wait_for_pids
from tests.test_item_faults import faulty_config, start_scheduler, summary_of, symbols_of


def ledger_of(tmp_path: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    """The journal replayed line by line: every line must be valid JSON."""
    journal = tmp_path / "root" / "runs" / run_day(now_utc()) / "ledger.jsonl"
    for line in journal.read_text("utf-8").splitlines():
        json.loads(line)
    return read_json(journal.with_name("status.json"))["symbols"]  # type: ignore[no-any-return]


def test_an_item_over_its_memory_cap_is_killed_and_fails_with_memory_limit(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    hog, child_hog, good = symbols_of(small_data)[:3]
    config = faulty_config(
        tmp_path,
        small_data,
        {hog: "alloc", child_hog: "alloc_in_child", good: "ok"},
        retries=1,
        timeout_minutes=5,
    )
    result = run_cli("run", "--config", str(config), "--max_memory_mb", "400")
    assert result.returncode == 1, result.stderr
    by_symbol = summary_of(tmp_path)["by_symbol"]
    assert by_symbol[good]["status"] == "success"
    for symbol in (hog, child_hog):
        assert by_symbol[symbol]["status"] == "failed"
        assert by_symbol[symbol]["reason"].startswith("memory limit: the process tree used")
        assert "over the 400 MB cap" in by_symbol[symbol]["reason"]
    attempts = ledger_of(tmp_path)[child_hog]["attempts"]
    assert [a["error_type"] for a in attempts] == ["MemoryLimit", "MemoryLimit"]
    assert_all_dead(recorded_pids(tmp_path))


def test_the_default_memory_cap_shares_the_machine_between_the_items_at_once(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    import psutil

    config = faulty_config(tmp_path, small_data, {symbols_of(small_data)[0]: "ok"})
    plan = run_cli("run", "--config", str(config), "--dry_run").stdout
    ram_mb = psutil.virtual_memory().total // 2**20
    assert f"{int(ram_mb * 0.8)} MB per item" in plan  # one symbol to run: a window of 1


def test_processes_an_item_leaves_behind_never_outlive_it(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    crasher, finisher = symbols_of(small_data)[:2]
    config = faulty_config(
        tmp_path,
        small_data,
        {crasher: "daemon_then_crash", finisher: "daemon_then_ok"},
        timeout_minutes=5,
    )
    assert run_cli("run", "--config", str(config)).returncode == 1
    by_symbol = summary_of(tmp_path)["by_symbol"]
    assert "killed by SIGSEGV" in by_symbol[crasher]["reason"]
    assert by_symbol[finisher]["status"] == "success"
    daemons = list((tmp_path / "pids").glob("*-daemon-*.pid"))
    assert len(daemons) == 2  # each double-forked, left its session, ignored SIGTERM
    assert_all_dead(recorded_pids(tmp_path))


def run_in_mount_namespace(
    mounts: str, args: list[str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """The CLI in a private mount namespace where `mounts` (shell) ran first, as root."""
    if shutil.which("unshare") is None:
        pytest.skip("unshare(1) is not installed")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"no private mount namespace here: {probe.stderr.decode().strip()}")
    command = " ".join([sys.executable, "-m", "retrainer", *args])
    return subprocess.run(
        ["unshare", "-m", "sh", "-c", f"{mounts} && exec {command}"],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_full_disk_fails_the_item_that_writes_with_a_clear_reason(
    tmp_path: Path, small_data: Path
) -> None:
    big, small = symbols_of(small_data)[:2]
    # In order: the small item then succeeds only if the big one's junk was removed.
    config = faulty_config(
        tmp_path,
        small_data,
        {big: "big_artifact", small: "ok"},
        timeout_minutes=5,
        mode="sequential",
    )
    models = tmp_path / "root" / "models"
    models.mkdir(parents=True)
    result = run_in_mount_namespace(
        f"mount -t tmpfs -o size=1m tmpfs {models}", ["run", "--config", str(config)], tmp_path
    )
    assert result.returncode == 1, result.stderr
    by_symbol = summary_of(tmp_path)["by_symbol"]
    assert by_symbol[big]["status"] == "failed"
    assert by_symbol[big]["reason"].startswith("OSError: disk full (ENOSPC)")
    assert by_symbol[small]["status"] == "success"
    assert ledger_of(tmp_path)[big]["state"] == "failed"


def test_a_read_only_model_folder_fails_the_items_and_keeps_the_ledger_valid(
    tmp_path: Path, small_data: Path
) -> None:
    names = symbols_of(small_data)[:2]
    config = faulty_config(tmp_path, small_data, dict.fromkeys(names, "ok"))
    models = tmp_path / "root" / "models"
    models.mkdir(parents=True)
    result = run_in_mount_namespace(
        f"mount -t tmpfs -o ro tmpfs {models}", ["run", "--config", str(config)], tmp_path
    )
    assert result.returncode == 1, result.stderr
    for symbol in names:
        entry = ledger_of(tmp_path)[symbol]
        assert entry["state"] == "failed"
        assert "Read-only file system" in entry["attempts"][-1]["reason"]


def test_a_stopped_run_lets_running_items_finish_within_the_grace(
    tmp_path: Path, small_data: Path
) -> None:
    names = symbols_of(small_data)
    behaviours = {names[0]: "slow", names[1]: "hang", names[2]: "ok"}
    config = faulty_config(
        tmp_path,
        small_data,
        behaviours,
        timeout_minutes=10,
        stop_grace_s=8.0,
        max_concurrent=2,
        mode="hybrid",
    )
    scheduler = start_scheduler(config, tmp_path)
    wait_for_pids(tmp_path, 2)
    scheduler.send_signal(signal.SIGTERM)
    _, stderr = scheduler.communicate(timeout=60)
    assert scheduler.returncode == 130, stderr
    summary = summary_of(tmp_path)
    states = {behaviours[s]: summary["by_symbol"][s]["status"] for s in behaviours}
    assert states == {"slow": "success", "hang": "interrupted", "ok": "not_started"}
    assert summary["by_symbol"][names[1]]["reason"] == "scheduler stopped by SIGTERM"
    assert_all_dead(recorded_pids(tmp_path))


def test_a_second_signal_stops_at_once(tmp_path: Path, small_data: Path) -> None:
    names = symbols_of(small_data)[:2]
    config = faulty_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "hang_ignoring_term"),
        timeout_minutes=10,
        stop_grace_s=600,
        kill_grace_s=600,
    )
    scheduler = start_scheduler(config, tmp_path)
    pids = wait_for_pids(tmp_path, 2)
    scheduler.send_signal(signal.SIGINT)
    time.sleep(0.5)
    scheduler.send_signal(signal.SIGINT)
    _, stderr = scheduler.communicate(timeout=60)  # far less than the 600 s graces
    assert scheduler.returncode == 130, stderr
    assert {s["status"] for s in summary_of(tmp_path)["by_symbol"].values()} == {"interrupted"}
    assert_all_dead(pids)


@pytest.mark.parametrize("storage", ["none", "local"])
def test_an_attempt_left_running_by_a_dead_scheduler_is_settled_from_disk(
    tmp_path: Path, small_data: Path, run_cli: RunCli, storage: str
) -> None:
    finished, unfinished = symbols_of(small_data)[:2]
    config = faulty_config(tmp_path, small_data, {finished: "ok", unfinished: "ok"})
    mirror = tmp_path / "mirror"
    if storage == "local":
        with config.open("a") as file:
            file.write(f'[storage]\nkind = "local"\npath = "{mirror}"\n')
    assert run_cli("run", "--config", str(config)).returncode == 0
    shutil.rmtree(mirror, ignore_errors=True)  # the dead run never got to upload
    layout = Layout(tmp_path / "root")
    day = run_day(now_utc())
    ledger = read_ledger(layout.status_path(day), layout.journal_path(day))
    # As a scheduler killed between an item's manifest and its ledger record leaves it,
    # and one killed while the other item was still writing:
    seq = read_json(layout.status_path(day))["journal_seq"]
    with layout.journal_path(day).open("a", encoding="utf-8") as journal:
        for symbol in (finished, unfinished):
            entry = ledger.entries[symbol].to_dict()
            entry["state"] = entry["attempts"][-1]["state"] = "running"
            entry["run_id"] = "dead-run"
            seq += 1
            journal.write(json.dumps({"seq": seq, "entry": entry}) + "\n")
    unfinished_dir = layout.root / ledger.entries[unfinished].artifact_dir  # type: ignore[operator]
    (unfinished_dir / "sha256.txt").unlink()

    plan = run_cli("run", "--config", str(config), "--dry_run").stdout
    assert f"{finished}" in plan and "succeeded today" in plan
    assert "the scheduler of run dead-run died while it ran" in plan
    assert run_cli("run", "--config", str(config)).returncode == 0
    symbols = ledger_of(tmp_path)
    assert len(symbols[finished]["attempts"]) == 1  # never trained again
    assert symbols[finished]["attempts"][0]["reason"].startswith("finished; recorded after")
    assert [a["state"] for a in symbols[unfinished]["attempts"]] == ["interrupted", "success"]
    if storage == "local":  # the recovered attempt is uploaded by the run that settled it
        assert symbols[finished]["upload"] == "uploaded"
        assert (mirror / symbols[finished]["artifact_dir"] / "sha256.txt").is_file()


def test_a_run_that_cannot_write_its_own_ledger_stops_with_exit_74_and_a_message(
    tmp_path: Path, small_data: Path
) -> None:
    names = symbols_of(small_data)[:2]
    config = faulty_config(tmp_path, small_data, dict.fromkeys(names, "ok"))
    runs = tmp_path / "root" / "runs"
    runs.mkdir(parents=True)
    result = run_in_mount_namespace(
        f"mount -t tmpfs -o ro tmpfs {runs}", ["run", "--config", str(config)], tmp_path
    )
    assert result.returncode == 74, result.stderr
    assert "cannot write the run's files" in result.stderr
    assert "Read-only file system" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "pids").exists()  # nothing was trained blind
