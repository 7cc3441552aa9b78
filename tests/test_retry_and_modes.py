"""Backoff is a pure function; modes only decide how many run at once."""

from __future__ import annotations

import random

import pytest

from retrainer.base.config import Mode, RunSettings, Settings
from retrainer.base.resources import Resources, detect_gpu_count
from retrainer.engine.retry import backoff_s
from retrainer.plan.policy import max_concurrent_for, resolve_policy
from retrainer.plan.windows import window_size


def test_backoff_stays_under_a_doubling_ceiling_up_to_the_cap() -> None:
    rng = random.Random(1)
    for retry, ceiling in [(1, 2.0), (2, 4.0), (3, 8.0), (6, 20.0), (60, 20.0)]:
        samples = [backoff_s(retry, base_s=2.0, cap_s=20.0, rng=rng) for _ in range(500)]
        assert all(0.0 <= s <= ceiling for s in samples)
        assert max(samples) > 0.8 * ceiling  # full jitter spreads over the whole range


def test_backoff_is_reproducible_from_its_seed() -> None:
    first = [backoff_s(n, 1.0, 60.0, random.Random(7)) for n in range(1, 6)]
    second = [backoff_s(n, 1.0, 60.0, random.Random(7)) for n in range(1, 6)]
    assert first == second


def test_backoff_rejects_retry_zero() -> None:
    with pytest.raises(ValueError):
        backoff_s(0, 1.0, 2.0, random.Random(0))


def test_sequential_runs_one_at_a_time() -> None:
    assert window_size(Mode.SEQUENTIAL, items=50, max_concurrent=12, machine_slots=16) == 1


def test_parallel_is_bounded_only_by_the_machine() -> None:
    assert window_size(Mode.PARALLEL, items=50, max_concurrent=2, machine_slots=16) == 16
    assert window_size(Mode.PARALLEL, items=3, max_concurrent=2, machine_slots=16) == 3


def test_hybrid_is_a_window_of_max_concurrent() -> None:
    assert window_size(Mode.HYBRID, items=50, max_concurrent=12, machine_slots=2) == 12
    assert window_size(Mode.HYBRID, items=5, max_concurrent=12, machine_slots=2) == 5


def test_default_concurrency_is_12_with_a_gpu_and_2_without() -> None:
    assert max_concurrent_for(RunSettings(), has_gpu=True) == 12
    assert max_concurrent_for(RunSettings(), has_gpu=False) == 2
    assert max_concurrent_for(RunSettings(max_concurrent=5), has_gpu=True) == 5


def test_the_policy_is_resolved_once_from_settings_machine_and_plan_size() -> None:
    settings = Settings.model_validate(
        {"run": {"mode": "hybrid", "max_concurrent": 4, "timeout_minutes": 2, "retries": 3}}
    )
    machine = Resources(cpu_count=16, gpu_count=0, memory_mb=10_000, cuda_visible_devices=None)
    policy = resolve_policy(settings, machine, runnable=3)
    assert (policy.window, policy.threads_per_item, policy.timeout_s) == (3, 5, 120.0)
    assert policy.memory_cap_mb == 10_000 * 8 // 10 // 3
    assert policy.retries == 3 and not policy.mirrored


def test_each_item_gets_an_equal_share_of_the_cores_and_at_least_one() -> None:
    res = Resources(cpu_count=16, gpu_count=2, memory_mb=1, cuda_visible_devices=None)
    assert res.threads_per_item(4) == 4
    assert res.threads_per_item(64) == 1
    assert [res.device_for_slot(s) for s in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]


def test_an_empty_cuda_visible_devices_hides_every_gpu() -> None:
    assert detect_gpu_count({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert detect_gpu_count({"CUDA_VISIBLE_DEVICES": "-1"}) == 0
