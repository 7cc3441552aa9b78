"""--driver dask, end to end through the real command, on a real Dask scheduler and workers
(`dask scheduler` and `dask worker` processes on 127.0.0.1, as dask-jobqueue starts them)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.distributed.backtests import assert_a_backtest_runs_its_windows_on_the_nodes
from tests.distributed.conftest import (
    DaskCluster,
    cluster_config,
    ledger_of,
    run_retrainer,
    start_retrainer,
)
from tests.support.processes import assert_all_dead, recorded_pids, wait_for_pids
from tests.test_item_faults import symbols_of

SLOT = {"resources": {"slots": 1}}


def test_a_night_on_dask_trains_every_symbol_on_the_workers_and_its_artifacts_verify(
    tmp_path: Path, small_data: Path, dask_cluster: DaskCluster
) -> None:
    names = symbols_of(small_data)[:4]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "ok"),
        "dask",
        {"address": dask_cluster.address, **SLOT},
    )
    done = run_retrainer(tmp_path, "run", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    entries = ledger_of(tmp_path)
    assert {s: e.state.value for s, e in entries.items()} == dict.fromkeys(names, "success")
    assert {e.attempts[-1].node for e in entries.values()} == {"w1", "w2"}
    assert run_retrainer(tmp_path, "verify", "--config", str(config)).returncode == 0
    scratches = sorted((tmp_path / "scratch").glob("retrainer-node-*"))
    assert [s.name for s in scratches] == ["retrainer-node-w1", "retrainer-node-w2"]
    assert all(list((s / "attempts").iterdir()) == [] for s in scratches)
    assert_all_dead(recorded_pids(tmp_path))


def test_a_hung_item_is_killed_on_its_worker_and_a_crashing_one_fails_alone(
    tmp_path: Path, small_data: Path, dask_cluster: DaskCluster
) -> None:
    hung, crashing, good = symbols_of(small_data)[:3]
    config = cluster_config(
        tmp_path,
        small_data,
        {hung: "grandchild", crashing: "exit3", good: "ok"},
        "dask",
        {"address": dask_cluster.address, **SLOT},
        timeout_minutes=0.1,
    )
    done = run_retrainer(tmp_path, "run", "--config", str(config))
    assert done.returncode == 1, done.stderr[-3000:]
    entries = ledger_of(tmp_path)
    assert entries[hung].state.value == "timeout"
    assert entries[crashing].state.value == "failed"
    assert "exited with code 3" in (entries[crashing].attempts[-1].reason or "")
    assert entries[good].state.value == "success"
    assert_all_dead(recorded_pids(tmp_path))


def test_an_item_whose_worker_dies_is_retried_on_another_and_finished_ones_stay(
    tmp_path: Path, small_data: Path, dask_cluster: DaskCluster
) -> None:
    names = symbols_of(small_data)[:3]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "slow"),
        "dask",
        {"address": dask_cluster.address, **SLOT},
        retries=1,
    )
    head = start_retrainer(tmp_path, "run", "--config", str(config))
    pids = wait_for_pids(tmp_path, 2)  # one item on each worker
    dask_cluster.kill_worker("w2")
    try:
        _, err = head.communicate(timeout=300)
        assert head.returncode == 0, err[-3000:]
    finally:
        dask_cluster.add_worker("w2")
    entries = ledger_of(tmp_path)
    assert {s: e.state.value for s, e in entries.items()} == dict.fromkeys(names, "success")
    lost = [a for e in entries.values() for a in e.attempts if a.state.value == "failed"]
    assert len(lost) == 1 and (lost[0].reason or "").startswith("node lost:")
    assert_all_dead(pids)  # the killed worker's attempt too: its lifeline closed


def test_a_head_killed_mid_run_leaves_no_attempt_alive_on_any_worker(
    tmp_path: Path, small_data: Path, dask_cluster: DaskCluster
) -> None:
    names = symbols_of(small_data)[:2]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "grandchild"),
        "dask",
        {"address": dask_cluster.address, **SLOT},
    )
    head = start_retrainer(tmp_path, "run", "--config", str(config))
    pids = wait_for_pids(tmp_path, 4)  # each item and its grandchild
    head.send_signal(signal.SIGKILL)
    head.communicate()
    # The scheduler drops a dead client's tasks; each worker's task sees it and stops its
    # attempt (SIGTERM, the grace, SIGKILL): seconds, not the night.
    assert_all_dead(pids, within_s=20)


def test_a_request_no_worker_can_meet_exits_2_at_once_naming_the_resource(
    tmp_path: Path, small_data: Path, dask_cluster: DaskCluster
) -> None:
    names = symbols_of(small_data)[:2]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "ok"),
        "dask",
        {"address": dask_cluster.address, "resources": {"GPU": 1}},
    )
    began = time.monotonic()
    done = run_retrainer(tmp_path, "run", "--config", str(config))
    assert done.returncode == 2
    assert "no node offers enough GPU" in done.stderr
    assert time.monotonic() - began < 60


def test_a_dry_run_on_dask_shows_the_workers(
    tmp_path: Path, small_data: Path, dask_cluster: DaskCluster
) -> None:
    names = symbols_of(small_data)[:3]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "ok"),
        "dask",
        {"address": dask_cluster.address, **SLOT},
    )
    done = run_retrainer(tmp_path, "run", "--config", str(config), "--dry_run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 at a time" in done.stdout and "w1" in done.stdout and "w2" in done.stdout


def test_the_champion_travels_to_the_worker_that_scores_it_for_the_gate(
    tmp_path: Path, small_data: Path, dask_cluster: DaskCluster
) -> None:
    symbol = symbols_of(small_data)[0]

    def night(log_loss: float, *args: str) -> None:
        params = {"scores": {symbol: {"test_log_loss": log_loss}}, "rescore_shift": 0.05}
        trainer = {"plugin": "tests.support.graded:graded", "params": params}
        config = cluster_config(
            tmp_path,
            small_data,
            {symbol: "ok"},
            "dask",
            {"address": dask_cluster.address, **SLOT},
            {"trainer": trainer},
        )
        done = run_retrainer(tmp_path, "run", "--config", str(config), *args)
        assert done.returncode == 0, done.stderr[-3000:]

    night(0.69)
    # Reported, the champion (0.69) beats 0.70; re-scored on the worker it does 0.74.
    night(0.70, "--force")

    promotion = ledger_of(tmp_path)[symbol].promotion
    assert promotion is not None
    assert (promotion["decision"], promotion["basis"]) == ("promoted", "re-evaluated")
    scratches = sorted((tmp_path / "scratch").glob("retrainer-node-*"))
    assert all(list((s / "attempts").iterdir()) == [] for s in scratches)


def test_a_backtest_on_dask_runs_each_window_on_a_worker(
    tmp_path: Path, small_data: Path, dask_cluster: DaskCluster
) -> None:
    assert_a_backtest_runs_its_windows_on_the_nodes(
        tmp_path, small_data, "dask", {"address": dask_cluster.address, **SLOT}
    )
