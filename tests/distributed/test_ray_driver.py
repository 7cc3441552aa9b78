"""--driver ray, end to end through the real command, on a real multi-node Ray cluster."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from bench.seaweed import SeaweedServer
from retrainer.base.clock import now_utc, run_day
from tests.conftest import read_json
from tests.distributed.backtests import assert_a_backtest_runs_its_windows_on_the_nodes
from tests.distributed.conftest import (
    RayCluster,
    cluster_config,
    ledger_of,
    run_retrainer,
    start_retrainer,
)
from tests.support.processes import assert_all_dead, recorded_pids, wait_for_pids
from tests.support.storage_fixtures import new_bucket, raw_s3
from tests.test_item_faults import symbols_of

# Items that only the two CPU nodes take, one at a time each.
CPU_ITEM = {"num_cpus": 1, "resources": {"cpu_item": 1}}


def test_a_night_on_ray_trains_every_symbol_on_the_nodes_and_its_artifacts_verify(
    tmp_path: Path, small_data: Path, ray_cluster: RayCluster
) -> None:
    names = symbols_of(small_data)[:4]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "ok"),
        "ray",
        {"address": ray_cluster.address, **CPU_ITEM},
    )
    done = run_retrainer(tmp_path, "run", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    entries = ledger_of(tmp_path)
    assert {s: e.state.value for s, e in entries.items()} == dict.fromkeys(names, "success")
    nodes = {e.attempts[-1].node for e in entries.values()}
    assert len(nodes) == 2 and all(n and "/" in n for n in nodes)  # both CPU nodes worked
    assert run_retrainer(tmp_path, "verify", "--config", str(config)).returncode == 0
    # The nodes wrote into their own scratch folders, and kept nothing of the attempts.
    scratches = sorted((tmp_path / "scratch").glob("retrainer-node-*"))
    assert len(scratches) == 2
    assert all(list((s / "attempts").iterdir()) == [] for s in scratches)
    assert all(len(list((s / "data").iterdir())) >= 1 for s in scratches)
    assert_all_dead(recorded_pids(tmp_path))


def test_a_hung_item_is_killed_on_its_node_and_a_crashing_one_fails_alone(
    tmp_path: Path, small_data: Path, ray_cluster: RayCluster
) -> None:
    hung, crashing, good = symbols_of(small_data)[:3]
    config = cluster_config(
        tmp_path,
        small_data,
        {hung: "grandchild", crashing: "segfault", good: "ok"},
        "ray",
        {"address": ray_cluster.address, **CPU_ITEM},
        timeout_minutes=0.1,
    )
    done = run_retrainer(tmp_path, "run", "--config", str(config))
    assert done.returncode == 1, done.stderr[-3000:]
    entries = ledger_of(tmp_path)
    assert entries[hung].state.value == "timeout"
    assert "timed out" in (entries[hung].attempts[-1].reason or "")
    assert entries[crashing].state.value == "failed"
    assert "SIGSEGV" in (entries[crashing].attempts[-1].reason or "")
    assert entries[good].state.value == "success"
    assert_all_dead(recorded_pids(tmp_path))  # the item and its setsid grandchild


def test_an_item_whose_node_is_removed_is_retried_elsewhere_and_finished_ones_stay(
    tmp_path: Path, small_data: Path, ray_cluster: RayCluster
) -> None:
    names = symbols_of(small_data)[:3]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "slow"),
        "ray",
        {"address": ray_cluster.address, **CPU_ITEM},
        retries=1,
    )
    head = start_retrainer(tmp_path, "run", "--config", str(config))
    wait_for_pids(tmp_path, 2)  # one item on each CPU node
    ray_cluster.remove("node_b")
    try:
        out, err = head.communicate(timeout=300)
        assert head.returncode == 0, err[-3000:]
    finally:
        ray_cluster.add("node_b", num_cpus=1, resources={"cpu_item": 1})
    entries = ledger_of(tmp_path)
    assert {s: e.state.value for s, e in entries.items()} == dict.fromkeys(names, "success")
    lost = [a for e in entries.values() for a in e.attempts if a.state.value == "failed"]
    assert len(lost) == 1 and (lost[0].reason or "").startswith("node lost:")
    assert run_retrainer(tmp_path, "verify", "--config", str(config)).returncode == 0
    assert_all_dead(recorded_pids(tmp_path))


def test_a_head_killed_mid_run_leaves_no_attempt_alive_on_any_node(
    tmp_path: Path, small_data: Path, ray_cluster: RayCluster
) -> None:
    names = symbols_of(small_data)[:2]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "grandchild"),
        "ray",
        {"address": ray_cluster.address, **CPU_ITEM},
    )
    head = start_retrainer(tmp_path, "run", "--config", str(config))
    pids = wait_for_pids(tmp_path, 4)  # each item and its grandchild
    head.send_signal(signal.SIGKILL)
    head.communicate()
    assert_all_dead(pids, within_s=10)
    # The next run settles them as a local run does, and trains them again.
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "ok"),
        "ray",
        {"address": ray_cluster.address, **CPU_ITEM},
    )
    assert run_retrainer(tmp_path, "run", "--config", str(config)).returncode == 0


def test_fractional_gpus_pack_four_items_on_one_gpu(
    tmp_path: Path, small_data: Path, ray_cluster: RayCluster
) -> None:
    names = symbols_of(small_data)[:5]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "device"),
        "ray",
        {"address": ray_cluster.address, "num_cpus": 1, "num_gpus": 0.25},
    )
    done = run_retrainer(tmp_path, "run", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = read_json(tmp_path / "root" / "summary" / run_day(now_utc()) / "engine_summary.json")
    assert summary["window"] == 4  # the one GPU node holds four items of a quarter GPU each
    entries = ledger_of(tmp_path)
    assert {e.attempts[-1].device for e in entries.values()} == {"cuda:0"}
    assert {str(e.metrics and e.metrics["device"]) for e in entries.values()} == {"cuda:0"}
    assert {str(e.metrics and e.metrics["cuda_visible_devices"]) for e in entries.values()} == {"0"}
    assert len({e.attempts[-1].node for e in entries.values()}) == 1
    spans = sorted((a.started_at, a.ended_at) for e in entries.values() for a in e.attempts)
    overlapping = sum(1 for start, _ in spans[:4] if start < min(end for _, end in spans[:4]))
    assert overlapping == 4  # the first four ran at once


def test_a_request_no_node_can_meet_exits_2_at_once_naming_the_resource(
    tmp_path: Path, small_data: Path, ray_cluster: RayCluster
) -> None:
    names = symbols_of(small_data)[:2]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "ok"),
        "ray",
        {"address": ray_cluster.address, "num_gpus": 2},
    )
    began = time.monotonic()
    done = run_retrainer(tmp_path, "run", "--config", str(config))
    assert done.returncode == 2
    assert "GPU" in done.stderr and "no node offers enough GPU" in done.stderr
    assert time.monotonic() - began < 60
    assert not (tmp_path / "root" / "models").exists()


def test_a_dry_run_on_ray_shows_the_cluster_and_the_window(
    tmp_path: Path, small_data: Path, ray_cluster: RayCluster
) -> None:
    names = symbols_of(small_data)[:3]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "ok"),
        "ray",
        {"address": ray_cluster.address, **CPU_ITEM},
    )
    done = run_retrainer(tmp_path, "run", "--config", str(config), "--dry_run")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 at a time" in done.stdout
    assert "node_a" in done.stdout or "cpu_item" in done.stdout
    assert not (tmp_path / "root" / "runs").exists()


def test_an_attempt_folder_over_max_ship_mb_comes_back_through_s3_and_verifies(
    tmp_path: Path,
    small_data: Path,
    ray_cluster: RayCluster,
    seaweed: SeaweedServer,
    aws_env: dict[str, str],
) -> None:
    big, small = symbols_of(small_data)[:2]
    bucket = new_bucket(seaweed)
    storage = {
        "kind": "s3",
        "bucket": bucket,
        "endpoint_url": seaweed.endpoint_url,
        "addressing_style": "path",
        "region": "us-east-1",
        "prefix": "nightly",
    }
    # The nodes reach S3 through the standard AWS chain: here the job's environment.
    cluster = {
        "address": ray_cluster.address,
        **CPU_ITEM,
        "max_ship_mb": 1,
        "runtime_env": {"env_vars": aws_env},
    }
    config = cluster_config(
        tmp_path,
        small_data,
        {big: "big_artifact", small: "ok"},
        "ray",
        cluster,
        sections={"storage": storage},
    )
    done = run_retrainer(tmp_path, "run", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    entries = ledger_of(tmp_path)
    assert {s: e.state.value for s, e in entries.items()} == {big: "success", small: "success"}
    model = tmp_path / "root" / str(entries[big].artifact_dir) / "model.bin"
    assert model.stat().st_size == 4 * 2**20
    assert run_retrainer(tmp_path, "verify", "--config", str(config)).returncode == 0
    listed = raw_s3(seaweed).list_objects_v2(Bucket=bucket, Prefix="nightly/transfers/")
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert [k.rsplit("/", 1)[-1] for k in keys] == [f"{big}-1.tar"]  # the small one did not


def test_with_a_shared_root_the_nodes_write_in_place_and_nothing_is_shipped(
    tmp_path: Path, small_data: Path, ray_cluster: RayCluster
) -> None:
    names = symbols_of(small_data)[:2]
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "ok"),
        "ray",
        {"address": ray_cluster.address, **CPU_ITEM, "shared_root": True},
    )
    done = run_retrainer(tmp_path, "run", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    entries = ledger_of(tmp_path)
    assert {s: e.state.value for s, e in entries.items()} == dict.fromkeys(names, "success")
    assert all(e.attempts[-1].node for e in entries.values())
    assert run_retrainer(tmp_path, "verify", "--config", str(config)).returncode == 0
    assert not (tmp_path / "scratch").exists()  # no data cache, no attempt folder on a node


def test_a_backtest_on_ray_runs_each_window_on_a_node(
    tmp_path: Path, small_data: Path, ray_cluster: RayCluster
) -> None:
    assert_a_backtest_runs_its_windows_on_the_nodes(
        tmp_path, small_data, "ray", {"address": ray_cluster.address, **CPU_ITEM}
    )
