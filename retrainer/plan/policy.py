"""The run's policy, resolved once beside the plan: how many items at once, each item's
thread budget and memory cap, deadlines, retries and backoff, and what is mirrored.

The engine reads this and never the settings: every number a night runs by is decided
here, from the settings, the machine and how many items the plan runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from retrainer.base.config import Mode, RunSettings, Settings
from retrainer.base.resources import (
    CPU_DEFAULT_CONCURRENCY,
    GPU_DEFAULT_CONCURRENCY,
    Resources,
    gpu_device_present,
    usable_cpu_count,
)
from retrainer.plan.windows import window_size
from retrainer.registry.gate import PromoteMode


@dataclass(frozen=True)
class RunPolicy:
    mode: Mode
    max_concurrent: int
    window: int  # items at once
    threads_per_item: int
    memory_cap_mb: int  # the per-item cap on the RSS of its process tree
    timeout_s: float  # per attempt
    kill_grace_s: float  # SIGTERM → SIGKILL
    stop_grace_s: float  # a stopped run's running items get this long to finish
    retries: int
    backoff_base_s: float
    backoff_cap_s: float
    seed: int  # of the backoff's jitter
    mirrored: bool  # storage is configured: a success starts with its upload pending
    upload_partials: bool  # partial outputs go up as soon as they are saved
    promote: PromoteMode = "gated"  # when a success replaces its symbol's champion
    keep_features: bool = True  # a success keeps its features.parquet
    upload_features: bool = True  # ... and mirrors it


def max_concurrent_for(run: RunSettings, has_gpu: bool, cluster_slots: int | None = None) -> int:
    """The hybrid window: the configured one; else on a cluster as many items as its nodes
    run at once; else 12 with a GPU and 2 on CPU."""
    if run.max_concurrent:
        return run.max_concurrent
    if cluster_slots is not None:
        return cluster_slots
    return GPU_DEFAULT_CONCURRENCY if has_gpu else CPU_DEFAULT_CONCURRENCY


def resolve_policy(settings: Settings, resources: Resources, runnable: int) -> RunPolicy:
    run = settings.run
    max_concurrent = max_concurrent_for(run, resources.has_gpu, resources.item_slots)
    window = window_size(run.mode, max(1, runnable), max_concurrent, resources.machine_slots)
    return RunPolicy(
        mode=run.mode,
        max_concurrent=max_concurrent,
        window=window,
        threads_per_item=resources.threads_per_item(window),
        memory_cap_mb=run.max_memory_mb or resources.memory_cap_mb(window),
        timeout_s=run.timeout_minutes * 60.0,
        kill_grace_s=run.kill_grace_s,
        stop_grace_s=run.stop_grace_s,
        retries=run.retries,
        backoff_base_s=run.backoff_base_s,
        backoff_cap_s=run.backoff_cap_s,
        seed=run.seed,
        mirrored=settings.storage.kind != "none",
        upload_partials=settings.storage.upload_partials,
        promote=settings.promote.mode,
        keep_features=settings.run.keep_features,
        upload_features=settings.storage.upload_features,
    )


def likely_threads_per_item(settings: Settings) -> int:
    """The thread budget items will most likely get, known before the plan sets the real
    one (the window depends on how many items run): as many items as the window holds.
    A GPU is guessed from its device nodes: detecting it for real imports torch."""
    cpus = usable_cpu_count()
    max_concurrent = max_concurrent_for(settings.run, gpu_device_present())
    many = max(max_concurrent, cpus)  # items enough to fill any window
    window = window_size(settings.run.mode, many, max_concurrent, cpus)
    return max(1, cpus // window)
