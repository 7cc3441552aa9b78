"""GPU packing with --driver ray: with [ray] num_gpus left unset and the items' GPU peaks in
past ledgers, each task asks for the fraction of a GPU its memory allows."""

from __future__ import annotations

from pathlib import Path

from retrainer.base.clock import now_utc, run_day
from tests.conftest import read_json
from tests.distributed.conftest import RayCluster, cluster_config, ledger_of, run_retrainer
from tests.test_item_faults import symbols_of
from tests.test_memory_admission import seed_history


def test_items_pack_on_a_gpu_by_their_measured_gpu_memory(
    tmp_path: Path, small_data: Path, ray_cluster: RayCluster
) -> None:
    names = symbols_of(small_data)[:4]
    # 3,000 MB measured (3,300 expected, + 512 for the context) on a 16,000 MB GPU: 3 fit.
    seed_history(tmp_path / "root", dict.fromkeys(names, 100.0), gpu_mb=3000.0)
    config = cluster_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "device"),
        "ray",
        {"address": ray_cluster.address},
    )
    # The session's GPU node does not say its GPU's memory: one that does stands in for it.
    ray_cluster.remove("gpu_node")
    try:
        ray_cluster.add("gpu_mem_node", num_cpus=4, num_gpus=1, resources={"gpu_mem_mb": 16000})
        planned = run_retrainer(tmp_path, "run", "--config", str(config), "--dry_run")
        assert "GPU memory allows 3 per GPU × 1" in planned.stdout, planned.stdout
        done = run_retrainer(tmp_path, "run", "--config", str(config))
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        ray_cluster.remove("gpu_mem_node")
        ray_cluster.add("gpu_node", num_cpus=4, num_gpus=1)
    summary = read_json(tmp_path / "root" / "summary" / run_day(now_utc()) / "engine_summary.json")
    assert summary["window"] == 3
    entries = ledger_of(tmp_path)
    assert {e.attempts[-1].device for e in entries.values()} == {"cuda:0"}  # a share of it
    spans = sorted((a.started_at, a.ended_at) for e in entries.values() for a in e.attempts)
    assert sum(1 for start, _ in spans[:3] if start < min(end for _, end in spans[:3])) == 3
