"""Memory in the plan: each item's expected peaks (from history), how many items the
memory budget holds at once, how many share a GPU, and the line that says why.

The engine admits items by these figures at run time (engine/admission.py); the plan only
states them, so that a dry run shows what the night will do and why (docs/scheduling.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from retrainer.base.resources import Resources

# A measured peak is planned 10 % larger: a symbol's data grows a little every night.
PEAK_MARGIN = 1.1


def expected_mb(measured_mb: float | None) -> float | None:
    """A measured peak as the plan expects it tonight (PEAK_MARGIN included)."""
    return None if measured_mb is None else round(measured_mb * PEAK_MARGIN, 1)


@dataclass(frozen=True)
class MemoryNeeds:
    """What tonight's runnable items are expected to need, one figure per item (None:
    not known yet; the first of those is the night's probe)."""

    peaks_mb: tuple[float | None, ...] = ()
    gpu_peaks_mb: tuple[float | None, ...] = ()


def memory_budget_mb(budget_mb: int | None, reserve_mb: int, resources: Resources) -> int | None:
    """What the items on this machine may hold together: [run] memory_budget_mb, else its
    RAM less memory_reserve_mb. None on a cluster, whose engine places items by each
    node's memory."""
    if resources.nodes:
        return None
    if budget_mb is not None:
        return budget_mb
    return max(1, resources.memory_mb - reserve_mb)


def admitted_peak_mb(expected: float | None, cap_mb: int) -> float:
    """The peak admission plans an item at: its expected one, never above the per-item cap
    (past it the item is killed anyway); the cap itself while unknown (conservative)."""
    return float(cap_mb) if expected is None else min(expected, float(cap_mb))


def memory_allows(needs: MemoryNeeds, budget_mb: int, cap_mb: int) -> int:
    """How many items surely fit at once: the most of the largest expected peaks whose sum
    stays within the budget (smaller items together may fit more), at least 1."""
    peaks = sorted((admitted_peak_mb(p, cap_mb) for p in needs.peaks_mb), reverse=True)
    if not peaks:
        peaks = [float(cap_mb)]
    total, count = 0.0, 0
    for peak in peaks:
        if total + peak > budget_mb:
            break
        total, count = total + peak, count + 1
    if count == len(peaks):  # all of tonight's fit: as many more as the largest allows
        count += math.floor((budget_mb - total) / peaks[0])
    return max(1, count)


def gpu_need_mb(needs: MemoryNeeds) -> float | None:
    """The GPU memory to plan each item at: the largest expected GPU peak among tonight's
    items (any item may land on any GPU; one not measured yet is taken to be as large);
    None when none is known."""
    known = [p for p in needs.gpu_peaks_mb if p is not None]
    return max(known) if known else None


def cluster_gpu_slots(resources: Resources, per_gpu: int) -> int:
    """Items a cluster's GPUs hold at once with per_gpu of them on each GPU."""
    return sum(math.floor(float(n.get("gpus", 0)) + 1e-9) * per_gpu for n in resources.nodes)


@dataclass(frozen=True)
class Concurrency:
    """How many items at once, and the plan's line that says why."""

    memory: int | None  # what the memory budget allows (None: no budget, a cluster)
    per_gpu: int | None  # items per GPU from their measured GPU memory (None: not packed)
    gpus: int
    cores: int
    window: int

    @property
    def chosen(self) -> int:
        return min(self.window, self.memory) if self.memory is not None else self.window

    def why(self) -> str:
        parts = []
        if self.memory is not None:
            parts.append(f"memory allows {self.memory}")
        if self.per_gpu is not None:
            parts.append(f"GPU memory allows {self.per_gpu} per GPU × {self.gpus}")
        parts += [f"cores {self.cores}", f"window {self.window}"]
        return f"{', '.join(parts)} → {self.chosen}"


def describe(
    window: int,
    resources: Resources,
    needs: MemoryNeeds,
    budget_mb: int | None,
    cap_mb: int,
    per_gpu: int | None,
) -> str:
    """e.g. "memory allows 5, cores 16, window 12 → 5"."""
    memory = None if budget_mb is None else memory_allows(needs, budget_mb, cap_mb)
    return Concurrency(memory, per_gpu, resources.gpu_count, resources.cpu_count, window).why()
