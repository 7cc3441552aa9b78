"""What the machine offers: cores, GPUs, memory; and the concurrency that follows."""

from __future__ import annotations

import math
import os
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psutil

GPU_DEFAULT_CONCURRENCY = 12
CPU_DEFAULT_CONCURRENCY = 2
# Device nodes a CUDA (or ROCm) build of torch needs; without one, no GPU can be visible,
# and the scheduler need not import torch (seconds) to find that out.
MEMORY_SHARE = 0.8
MIN_MEMORY_CAP_MB = 256
_GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")
# GPU packing: the share of a GPU's memory its items may fill together, and what each
# item's process holds there beyond torch.cuda.max_memory_allocated (its CUDA context,
# the caching allocator's slack).
GPU_MEMORY_SHARE = 0.9
CUDA_CONTEXT_MB = 512


@dataclass(frozen=True)
class Resources:
    cpu_count: int
    gpu_count: int
    memory_mb: int
    cuda_visible_devices: str | None
    # A cluster (a remote driver's): how many items its nodes run at once, each item's
    # thread budget there, and its nodes. None and () for this machine.
    item_slots: int | None = None
    item_threads: int | None = None
    item_memory_mb: int | None = None
    nodes: tuple[dict[str, Any], ...] = ()
    # The memory of one GPU (the smallest, if they differ), for packing items on GPUs;
    # None: not known (no GPU, or nvidia-smi could not say).
    gpu_memory_mb: int | None = None

    @property
    def has_gpu(self) -> bool:
        return self.gpu_count > 0

    @property
    def machine_slots(self) -> int:
        """How many items the machine (or cluster) can run at once: parallel's bound."""
        if self.item_slots is not None:
            return self.item_slots
        return max(self.cpu_count, self.gpu_count)

    def threads_per_item(self, window: int) -> int:
        """Cores ÷ concurrency, at least 1: parallel items never oversubscribe the CPU.
        On a cluster: what each item asked of its node."""
        if self.item_threads is not None:
            return self.item_threads
        return max(1, self.cpu_count // max(1, window))

    def memory_cap_mb(self, window: int) -> int:
        """Default per-item cap: 80 % of RAM shared by the window, so a full window of
        items at their caps still leaves the scheduler and the machine room to work."""
        if self.item_memory_mb is not None:  # what each item asked of its node
            return self.item_memory_mb
        return max(MIN_MEMORY_CAP_MB, int(self.memory_mb * MEMORY_SHARE) // max(1, window))

    def device_for_slot(self, slot: int) -> str:
        """This machine's GPUs round-robin over the slots; on a cluster the engine assigns
        each attempt its device on its node."""
        if self.nodes:
            return "cpu"
        return f"cuda:{slot % self.gpu_count}" if self.has_gpu else "cpu"

    def items_per_gpu(self, expected_gpu_mb: float) -> int | None:
        """How many items of this expected GPU peak one GPU holds at once; None when the
        GPU's memory is not known."""
        if self.gpu_memory_mb is None or not self.has_gpu:
            return None
        return items_per_gpu(self.gpu_memory_mb, expected_gpu_mb)

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        if self.gpu_memory_mb is None:
            raw.pop("gpu_memory_mb")
        if not self.nodes:  # this machine: the record keeps its former shape
            for key in ("item_slots", "item_threads", "item_memory_mb", "nodes"):
                raw.pop(key)
        return raw


def items_per_gpu(gpu_memory_mb: float, expected_gpu_mb: float) -> int:
    """floor(GPU memory × GPU_MEMORY_SHARE ÷ (expected peak + CUDA_CONTEXT_MB)), at least 1."""
    need = max(0.0, expected_gpu_mb) + CUDA_CONTEXT_MB
    return max(1, math.floor(gpu_memory_mb * GPU_MEMORY_SHARE / need))


def usable_cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def detect_gpu_count(environ: dict[str, str] | None = None) -> int:
    environ = dict(os.environ) if environ is None else environ
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return 0
    if not gpu_device_present():
        return 0
    import torch  # only where a GPU could exist

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def gpu_device_present() -> bool:
    """A GPU device node exists: found without importing torch."""
    return any(Path(node).exists() for node in _GPU_DEVICE_NODES)


def detect_gpu_memory_mb(environ: dict[str, str] | None = None) -> int | None:
    """The smallest visible GPU's memory, from nvidia-smi: the scheduler never creates a
    CUDA context (torch.cuda.get_device_properties would) just to ask. None without it."""
    environ = dict(os.environ) if environ is None else environ
    try:
        listed = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return gpu_memory_from_listing(listed, environ.get("CUDA_VISIBLE_DEVICES"))


def gpu_memory_from_listing(listed: str, visible: str | None) -> int | None:
    """nvidia-smi's "index, MiB" lines → the smallest of the visible GPUs (indices in
    CUDA_VISIBLE_DEVICES; UUIDs there, or none: all of them)."""
    sizes: dict[str, int] = {}
    for line in listed.splitlines():
        index, _, total = line.partition(",")
        try:
            sizes[index.strip()] = int(float(total))
        except ValueError:
            continue
    wanted = [v.strip() for v in (visible or "").split(",") if v.strip()]
    if wanted and all(v.isdigit() for v in wanted):
        sizes = {k: v for k, v in sizes.items() if k in wanted}
    return min(sizes.values()) if sizes else None


def detect_resources() -> Resources:
    gpu_count = detect_gpu_count()
    return Resources(
        cpu_count=usable_cpu_count(),
        gpu_count=gpu_count,
        memory_mb=int(psutil.virtual_memory().total // 2**20),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        gpu_memory_mb=detect_gpu_memory_mb() if gpu_count else None,
    )
