"""Memory admission and GPU packing: an item starts only while the expected peaks of the
running items plus its own fit in the memory budget; the first item of an unknown size is
the probe; a huge item never deadlocks the night; items per GPU come from their measured
GPU memory. Real runs of the real command, past nights seeded as ledgers."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retrainer.base.artifacts import Layout
from retrainer.base.clock import iso, now_utc, run_day
from retrainer.base.config import Settings
from retrainer.base.resources import (
    GPU_DEFAULT_CONCURRENCY,
    Resources,
    gpu_memory_from_listing,
    items_per_gpu,
)
from retrainer.engine.admission import Admission
from retrainer.engine.drivers.cluster import NodeInfo, cluster_resources
from retrainer.ledger.entries import Attempt, ItemState, LedgerEntry, Outcome
from retrainer.ledger.journal import Ledger
from retrainer.plan.memory import MemoryNeeds, memory_allows
from retrainer.plan.planner import Action, PlanItem
from retrainer.plan.policy import resolve_policy
from tests.conftest import RunCli, read_json, write_config
from tests.test_item_faults import symbols_of

PLUGIN = "tests.support.memory_plugins:allocating"


def config(
    tmp_path: Path, data: Path, alloc_mb: dict[str, int], hold_s: float = 1.0, **run: Any
) -> Path:
    return write_config(
        tmp_path / "memory.toml",
        {
            "run": {
                "root": str(tmp_path / "root"),
                "symbols": ",".join(alloc_mb),
                "order": "plan",
                "retries": 0,
                "max_concurrent": 2,
                "max_memory_mb": 1000,
                **run,
            },
            "data": {"path": str(data)},
            "trainer": {"plugin": PLUGIN, "params": {"alloc_mb": alloc_mb, "hold_s": hold_s}},
        },
    )


def seed_history(root: Path, peaks_mb: dict[str, float], gpu_mb: float | None = None) -> None:
    """Yesterday's ledger: each symbol succeeded once with the given peak."""
    day = run_day(now_utc() - timedelta(days=1))
    layout = Layout(root)
    ledger = Ledger(layout.status_path(day), layout.journal_path(day))
    at = iso(now_utc() - timedelta(days=1))
    for symbol, peak in peaks_mb.items():
        attempt = Attempt(
            1,
            ItemState.SUCCESS,
            at,
            f"models/{symbol}/x",
            "cpu",
            1,
            ended_at=at,
            seconds=1.0,
            peak_rss_mb=peak,
            gpu_peak_mb=gpu_mb,
        )
        ledger.record(LedgerEntry(symbol, ItemState.SUCCESS, at, attempts=(attempt,)))
    ledger.close()


def attempts(root: Path) -> dict[str, dict[str, Any]]:
    status = read_json(root / "runs" / run_day(now_utc()) / "status.json")
    return {s: e["attempts"][-1] for s, e in status["symbols"].items()}


def interval(attempt: dict[str, Any]) -> tuple[datetime, datetime]:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return parse(attempt["started_at"]), parse(attempt["ended_at"])


def overlap(a: dict[str, Any], b: dict[str, Any]) -> bool:
    (a0, a1), (b0, b1) = interval(a), interval(b)
    return a0 < b1 and b0 < a1


def engine_events(root: Path, event: str) -> list[dict[str, Any]]:
    log = root / "logs" / run_day(now_utc()) / "engine.log"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


# -- through the real command ------------------------------------------------------------


def test_a_real_attempt_records_its_peak_rss_in_the_ledger(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    symbol = symbols_of(small_data)[0]
    result = run_cli("run", "--config", str(config(tmp_path, small_data, {symbol: 200}, 0.3)))
    assert result.returncode == 0, result.stderr
    attempt = attempts(tmp_path / "root")[symbol]
    assert attempt["peak_rss_mb"] >= 200
    assert attempt["peak_rss_mb"] < 1000  # its own tree, not the machine
    assert attempt["gpu_peak_mb"] is None  # CUDA never initialised


def test_admission_holds_back_an_item_that_does_not_fit_beside_the_running_one(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    big, big2, small = symbols_of(small_data)[:3]
    root = tmp_path / "root"
    seed_history(root, {big: 300, big2: 300, small: 40})
    cfg = config(tmp_path, small_data, {big: 60, big2: 60, small: 20}, memory_budget_mb=500)

    planned = run_cli("run", "--config", str(cfg), "--dry_run")
    assert "concurrency: memory allows 1, cores" in planned.stdout, planned.stdout
    assert "window 2 → 1 (memory budget 500 MB)" in planned.stdout

    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    ran = attempts(root)
    assert not overlap(ran[big], ran[big2])  # 330 + 330 MB expected: over the 500 MB budget
    assert overlap(ran[big], ran[small])  # the small one passed the held one
    held = engine_events(root, "item_held")
    assert [e["symbol"] for e in held] == [big2]  # logged once, not every loop pass
    assert held[0]["expected_mb"] == 330 and held[0]["free_mb"] == 170


def test_the_first_item_of_unknown_size_is_a_probe_that_runs_alone(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    symbols = symbols_of(small_data)[:4]
    # No history: each is planned at the 1000 MB cap, over the budget, until one measures.
    cfg = config(tmp_path, small_data, dict.fromkeys(symbols, 50), 0.8, memory_budget_mb=400)
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 0, result.stderr
    ran = attempts(tmp_path / "root")
    probe = min(ran.values(), key=lambda a: a["started_at"])
    assert not any(overlap(probe, other) for other in ran.values() if other is not probe)
    rest = [a for a in ran.values() if a is not probe]
    assert any(overlap(a, b) for a in rest for b in rest if a is not b)  # measured: two fit


def test_one_huge_item_never_deadlocks_the_night(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    huge, other = symbols_of(small_data)[:2]
    root = tmp_path / "root"
    seed_history(root, {huge: 9000, other: 30})  # over the budget even alone
    cfg = config(tmp_path, small_data, {huge: 20, other: 20}, 0.3, memory_budget_mb=300)
    result = run_cli("run", "--config", str(cfg), timeout=60)
    assert result.returncode == 0, result.stderr
    ran = attempts(root)
    assert {a["state"] for a in ran.values()} == {"success"}
    assert not overlap(ran[huge], ran[other])


# -- the arithmetic -----------------------------------------------------------------------


def item(symbol: str, peak: float | None) -> PlanItem:
    return PlanItem(symbol, Action.RUN, "", Path("x"), None, 0, expected_peak_mb=peak)


class NoLog:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.events.append({"event": event, **fields})


def test_a_held_item_lets_at_most_a_window_of_items_pass_it() -> None:
    log = NoLog()
    admission = Admission(budget_mb=1000, cap_mb=2000, passes=2, log=log)
    big = item("BIG", 800)
    admission.started(0, item("RUNNING", 500))
    queue = [big, *(item(f"S{i}", 100) for i in range(4))]
    started = []
    for slot in range(1, 5):
        chosen = admission.choose(queue)
        if chosen is None:
            break
        queue.remove(chosen)
        admission.started(slot, chosen)
        started.append(chosen.symbol)
    assert started == ["S0", "S1"]  # two passed BIG; then nothing passes it
    assert [e["symbol"] for e in log.events] == ["BIG"]
    for slot in range(3):
        admission.released(slot)
    assert admission.choose(queue) is big


def test_the_probe_sets_the_estimate_of_the_unknown_items() -> None:
    admission = Admission(budget_mb=1000, cap_mb=1200, passes=4, log=NoLog())
    probe, unknown = item("P", None), item("U", None)
    assert admission.expected_mb(unknown) == 1200  # the cap, until measured
    admission.started(0, probe)
    assert admission.choose([unknown]) is None
    admission.released(0)
    assert admission.choose([unknown]) is None  # its peak arrives with its outcome
    admission.measured(probe, Outcome(ItemState.SUCCESS, "ok", peak_rss_mb=200))
    assert admission.expected_mb(unknown) == pytest.approx(220)
    assert admission.choose([unknown]) is unknown
    assert admission.expected_mb(item("K", 5000)) == 1200  # never above the cap


def test_an_outcome_carries_its_peaks_across_a_remote_driver() -> None:
    outcome = Outcome(ItemState.SUCCESS, "ok", peak_rss_mb=123.4, gpu_peak_mb=5678.9)
    assert Outcome.from_dict(json.loads(json.dumps(outcome.to_dict()))) == outcome
    attempt = Attempt(1, ItemState.RUNNING, "t", "d", "cpu", 1).ended(outcome, "t2", 1.0)
    assert (attempt.peak_rss_mb, attempt.gpu_peak_mb) == (123.4, 5678.9)


def test_memory_allows_the_most_of_the_largest_items_that_fit() -> None:
    needs = MemoryNeeds((4000.0, 3000.0, 1000.0, None))
    # The unknown one at the 6000 MB cap, then 4000: 10,000 fit, 3000 more do not.
    assert memory_allows(needs, budget_mb=10_000, cap_mb=6000) == 2
    assert memory_allows(needs, budget_mb=8000, cap_mb=6000) == 1
    assert memory_allows(needs, budget_mb=20000, cap_mb=6000) == 5  # all, and one more
    assert memory_allows(MemoryNeeds(), budget_mb=100, cap_mb=400) == 1


GPU_MACHINE = Resources(
    cpu_count=16, gpu_count=2, memory_mb=256_000, cuda_visible_devices=None, gpu_memory_mb=80_000
)


def test_items_per_gpu_come_from_their_measured_gpu_memory() -> None:
    assert items_per_gpu(80_000, 7_000) == 9  # 72,000 ÷ (7,000 + 512)
    needs = MemoryNeeds((None, None), (7_000.0, 3_000.0))
    policy = resolve_policy(Settings(), GPU_MACHINE, runnable=40, needs=needs)
    assert policy.gpu_items_per_device == 9
    # Not a fixed 12; 18 fit the GPUs, and without max_concurrent the 16 cores bound it.
    assert (policy.max_concurrent, policy.window) == (16, 16)
    assert "GPU memory allows 9 per GPU × 2" in policy.concurrency_why
    wider = Settings.model_validate({"run": {"max_concurrent": 40}})
    assert resolve_policy(wider, GPU_MACHINE, runnable=40, needs=needs).window == 18
    for slot in range(18):  # the slots spread evenly over the GPUs: 9 each
        assert GPU_MACHINE.device_for_slot(slot) == f"cuda:{slot % 2}"


def test_max_concurrent_caps_the_gpu_packing_and_without_history_the_default_stays() -> None:
    needs = MemoryNeeds((None,), (1_000.0,))
    capped = Settings.model_validate({"run": {"max_concurrent": 10}})
    assert resolve_policy(capped, GPU_MACHINE, 40, needs).window == 10
    unknown = resolve_policy(Settings(), GPU_MACHINE, 40, MemoryNeeds((None,), (None,)))
    assert unknown.window == GPU_DEFAULT_CONCURRENCY and unknown.gpu_items_per_device is None
    no_memory = GPU_MACHINE.__class__(16, 2, 256_000, None)  # nvidia-smi could not say
    assert resolve_policy(Settings(), no_memory, 40, needs).window == GPU_DEFAULT_CONCURRENCY


def test_a_ray_task_asks_for_a_fraction_of_a_gpu_unless_num_gpus_is_set() -> None:
    node = NodeInfo("n1", 32, 2, 256_000, {"gpu_mem_mb": 160_000.0})
    cluster = cluster_resources([node], {"CPU": 1.0, "GPU": 0.0}, 1)
    assert cluster.gpu_memory_mb == 80_000
    needs = MemoryNeeds((None,), (20_000.0,))
    ray = Settings.model_validate({"run": {"driver": "ray"}})
    policy = resolve_policy(ray, cluster, 40, needs)
    assert policy.gpu_items_per_device == 3 and policy.gpu_share == 0.3333
    assert policy.window == 6  # 3 per GPU × 2 GPUs, within the node's 32 CPUs
    explicit = Settings.model_validate({"run": {"driver": "ray"}, "ray": {"num_gpus": 0.5}})
    assert resolve_policy(explicit, cluster, 40, needs).gpu_share is None
    undeclared = cluster_resources([NodeInfo("n2", 32, 2, 256_000)], {"CPU": 1.0}, 1)
    assert resolve_policy(ray, undeclared, 40, needs).gpu_share is None


def test_gpu_memory_is_read_from_nvidia_smi_for_the_visible_gpus() -> None:
    listed = "0, 81559\n1, 40960\n2, 81559\n"
    assert gpu_memory_from_listing(listed, None) == 40960  # the smallest
    assert gpu_memory_from_listing(listed, "0,2") == 81559
    assert gpu_memory_from_listing(listed, "GPU-3f2a") == 40960  # UUIDs: all of them
    assert gpu_memory_from_listing("", None) is None


def test_a_window_widened_by_gpu_packing_never_caps_items_below_their_measured_peak() -> None:
    # One large GPU, small GPU peaks, 2.5 GB of RAM each: packing alone would allow ~150.
    h200 = Resources(16, 1, 128 * 1024, "0", gpu_memory_mb=141_000)
    needs = MemoryNeeds((2_500.0,) * 300, (300.0,) * 300)
    policy = resolve_policy(Settings(), h200, runnable=300, needs=needs)
    assert policy.window == 16  # the cores bound it
    assert policy.memory_cap_mb >= 2_500 * 1.5
