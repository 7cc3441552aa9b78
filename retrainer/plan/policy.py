"""The run's policy, resolved once beside the plan: how many items at once, each item's
thread budget and memory cap, deadlines, retries and backoff, and what is mirrored.

The engine reads this and never the settings: every number a night runs by is decided
here, from the settings, the machine and how many items the plan runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from retrainer.base.config import Mode, RunSettings, Settings
from retrainer.base.resources import (
    CPU_DEFAULT_CONCURRENCY,
    GPU_DEFAULT_CONCURRENCY,
    Resources,
    gpu_device_present,
    usable_cpu_count,
)
from retrainer.plan.memory import (
    MemoryNeeds,
    cluster_gpu_slots,
    describe,
    gpu_need_mb,
    memory_budget_mb,
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
    # The queue's order: longest expected first, or as the plan lists the items; retries
    # that are due go in by the same rule (planner.scheduled sets it).
    order: Literal["longest_first", "plan"] = "plan"
    # [run] deadline ("06:00", local) and the moment it names, resolved once at plan time:
    # past it no item starts (planner.scheduled sets both; None: no deadline).
    deadline: str | None = None
    deadline_at: datetime | None = None
    retry_budget: int | None = None  # retries the whole run may spend (None: no cap)
    # Memory admission (engine/admission.py): what the running items' expected peaks may
    # add up to on this machine (None: no admission, a cluster places items itself).
    memory_budget_mb: int | None = None
    # GPU packing: items per GPU from their measured GPU peaks (None: not packed), and the
    # fraction of a GPU each Ray task asks for when [ray] num_gpus is left unset.
    gpu_items_per_device: int | None = None
    gpu_share: float | None = None
    # How many at once and why, e.g. "memory allows 5, cores 16, window 12 → 5".
    concurrency_why: str = ""
    # Two stages ([run] two_stage): each item's `prepare` runs on one of prepare_slots
    # CPU slots (prepare_threads threads each), then its train stage on the window's
    # slots. False: one stage, prepare_slots 0.
    two_stage: bool = False
    prepare_slots: int = 0
    prepare_threads: int = 1


def max_concurrent_for(run: RunSettings, has_gpu: bool, cluster_slots: int | None = None) -> int:
    """The hybrid window: the configured one; else on a cluster as many items as its nodes
    run at once; else 12 with a GPU and 2 on CPU."""
    if run.max_concurrent:
        return run.max_concurrent
    if cluster_slots is not None:
        return cluster_slots
    return GPU_DEFAULT_CONCURRENCY if has_gpu else CPU_DEFAULT_CONCURRENCY


def resolve_policy(
    settings: Settings,
    resources: Resources,
    runnable: int,
    needs: MemoryNeeds | None = None,
    has_prepare: bool = False,
) -> RunPolicy:
    """needs: the runnable items' expected memory peaks (from history), if known;
    has_prepare: the trainer declares a `prepare` stage (two stages are possible)."""
    run = settings.run
    needs = needs or MemoryNeeds()
    max_concurrent = max_concurrent_for(run, resources.has_gpu, resources.item_slots)
    per_gpu, gpu_share = gpu_packing(settings, resources, needs)
    gpu_slots = None
    if per_gpu is not None:
        gpu_slots = (
            cluster_gpu_slots(resources, per_gpu)
            if resources.nodes
            else per_gpu * resources.gpu_count
        )
        # Not a fixed 12: as many as the GPUs' memory holds, within max_concurrent (else
        # within the machine's cores: each item still needs a CPU to feed its GPU).
        fixed = run.max_concurrent or resources.item_slots or resources.machine_slots
        max_concurrent = max(1, min(fixed, gpu_slots))
    window = window_size(run.mode, max(1, runnable), max_concurrent, resources.machine_slots)
    if gpu_slots is not None:
        window = max(1, min(window, gpu_slots))
    memory_cap_mb = run.max_memory_mb or default_memory_cap_mb(resources, window, needs)
    budget_mb = memory_budget_mb(run.memory_budget_mb, run.memory_reserve_mb, resources)
    two_stage = uses_two_stages(run, resources, has_prepare)
    prepare_slots = prepare_slot_count(run, resources, window, runnable) if two_stage else 0
    threads = resources.threads_per_item(window + prepare_slots)
    why = describe(window, resources, needs, budget_mb, memory_cap_mb, per_gpu)
    if two_stage:
        why += f"; two stages: {prepare_slots} prepare slots beside the window"
    return RunPolicy(
        mode=run.mode,
        max_concurrent=max_concurrent,
        window=window,
        threads_per_item=threads,
        memory_cap_mb=memory_cap_mb,
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
        retry_budget=run.retry_budget,
        memory_budget_mb=budget_mb,
        gpu_items_per_device=per_gpu,
        gpu_share=gpu_share,
        concurrency_why=why,
        two_stage=two_stage,
        prepare_slots=prepare_slots,
        prepare_threads=threads,
    )


def uses_two_stages(run: RunSettings, resources: Resources, has_prepare: bool) -> bool:
    """Two stages need a trainer with `prepare` and the local driver (a cluster places each
    attempt itself); "on" forces them, "auto" takes them on a GPU machine, except in
    sequential mode (one item at a time)."""
    if not has_prepare or run.two_stage == "off" or run.driver != "local" or resources.nodes:
        return False
    if run.two_stage == "on":
        return True
    return resources.has_gpu and run.mode is not Mode.SEQUENTIAL


def prepare_slot_count(run: RunSettings, resources: Resources, window: int, runnable: int) -> int:
    """[run] prepare_slots, else the cores the train window leaves (at least 1); never
    more than the items."""
    wanted = run.prepare_slots or max(1, resources.cpu_count - window)
    return max(1, min(wanted, runnable))


# A default per-item cap never sits below an item's measured peak plus this margin: a
# window widened by packing must not turn every item into a memory-limit kill.
CAP_OVER_PEAK = 1.5


def default_memory_cap_mb(resources: Resources, window: int, needs: MemoryNeeds) -> int:
    """The machine's share per item (resources.memory_cap_mb), raised to what the largest
    measured item needs; memory admission keeps their sum within the budget."""
    share = resources.memory_cap_mb(window)
    known = [p for p in needs.peaks_mb if p is not None]
    if not known or resources.item_memory_mb is not None:
        return share
    return max(share, int(max(known) * CAP_OVER_PEAK))


def gpu_packing(
    settings: Settings, resources: Resources, needs: MemoryNeeds
) -> tuple[int | None, float | None]:
    """Items per GPU from the largest expected GPU peak and the GPU's memory; and for a Ray
    cluster whose [ray] num_gpus is left unset, the fraction of a GPU each task asks for
    (1/items per GPU, rounded down to Ray's 0.0001). (None, None): not packed (no GPU, no
    measured GPU peak, the GPU's memory unknown, or a cluster whose request is set)."""
    need = gpu_need_mb(needs)
    per_gpu = None if need is None else resources.items_per_gpu(need)
    if per_gpu is None:
        return None, None
    if not resources.nodes:
        return per_gpu, None
    if settings.run.driver != "ray" or "num_gpus" in settings.ray.model_fields_set:
        return None, None
    return per_gpu, math.floor(10_000 / per_gpu) / 10_000


def likely_threads_per_item(settings: Settings) -> int:
    """The thread budget items will most likely get, known before the plan sets the real
    one (the window depends on how many items run): as many items as the window holds.
    A GPU is guessed from its device nodes: detecting it for real imports torch."""
    cpus = usable_cpu_count()
    max_concurrent = max_concurrent_for(settings.run, gpu_device_present())
    many = max(max_concurrent, cpus)  # items enough to fill any window
    window = window_size(settings.run.mode, many, max_concurrent, cpus)
    return max(1, cpus // window)
