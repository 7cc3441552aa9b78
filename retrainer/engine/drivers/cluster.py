"""What a remote driver knows of its cluster: its nodes, what one item asks of a node, how
many items fit at once, and whether a request can be met at all."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from retrainer.base.errors import BadInputError
from retrainer.base.resources import Resources

_EPSILON = 1e-9  # 4 × 0.25 GPU fit on one GPU, whatever the float rounding
# A custom resource a node may declare: its GPUs' memory, all of them together, in MB
# (`ray start --resources '{"gpu_mem_mb": 163840}'`), for packing items on GPUs.
GPU_MEMORY_RESOURCE = "gpu_mem_mb"


@dataclass(frozen=True)
class NodeInfo:
    name: str
    cpus: float
    gpus: float
    memory_mb: int
    resources: dict[str, float] = field(default_factory=dict)  # custom ones

    def offers(self, name: str) -> float:
        return {"CPU": self.cpus, "GPU": self.gpus, "memory_mb": float(self.memory_mb)}.get(
            name, self.resources.get(name, 0.0)
        )

    def fits(self, request: Mapping[str, float]) -> int:
        """How many items of this request the node runs at once."""
        counts = [math.floor(self.offers(k) / v + _EPSILON) for k, v in request.items() if v > 0]
        return min(counts) if counts else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "cpus": self.cpus,
            "gpus": self.gpus,
            "memory_mb": self.memory_mb,
            "resources": dict(self.resources),
        }


def check_feasible(nodes: Sequence[NodeInfo], request: Mapping[str, float], where: str) -> None:
    """Bad input, at once, when no node can run even one item: a request the engine would
    otherwise queue forever (Ray only warns about infeasible tasks)."""
    if not nodes:
        raise BadInputError(f"the cluster at {where} has no live node")
    if any(node.fits(request) >= 1 for node in nodes):
        return
    wanted = ", ".join(f"{k} {v:g}" for k, v in request.items() if v > 0)
    short = sorted(
        {
            k
            for k, v in request.items()
            if v > 0 and all(node.offers(k) + _EPSILON < v for node in nodes)
        }
    )
    offered = "; ".join(
        f"{n.name}: CPU {n.cpus:g}, GPU {n.gpus:g}, memory_mb {n.memory_mb}"
        + "".join(f", {k} {v:g}" for k, v in sorted(n.resources.items()))
        for n in nodes
    )
    because = (
        f"no node offers enough {', '.join(short)}" if short else "no node offers all of it at once"
    )
    raise BadInputError(
        f"each item asks for {wanted}, and {because} on the cluster at "
        f"{where} (nodes: {offered}); nothing was started"
    )


def cluster_resources(
    nodes: Sequence[NodeInfo],
    request: Mapping[str, float],
    threads_per_item: int,
    memory_mb: int | None = None,
) -> Resources:
    """The cluster as the plan sees a machine: its totals, and how many items fit at once."""
    return Resources(
        cpu_count=int(sum(n.cpus for n in nodes)),
        gpu_count=int(sum(n.gpus for n in nodes) + _EPSILON),
        memory_mb=sum(n.memory_mb for n in nodes),
        cuda_visible_devices=None,
        item_slots=max(1, sum(n.fits(request) for n in nodes)),
        item_threads=threads_per_item,
        item_memory_mb=memory_mb,
        nodes=tuple(n.to_dict() for n in nodes),
        gpu_memory_mb=gpu_memory_mb(nodes),
    )


def gpu_memory_mb(nodes: Sequence[NodeInfo]) -> int | None:
    """One GPU's memory on the cluster (the smallest), when every node with a GPU declares
    GPU_MEMORY_RESOURCE; else None (not known: GPU packing is off)."""
    with_gpus = [n for n in nodes if n.gpus >= 1]
    declared = [n.resources.get(GPU_MEMORY_RESOURCE, 0.0) / n.gpus for n in with_gpus]
    if not declared or not all(declared):
        return None
    return int(min(declared))
