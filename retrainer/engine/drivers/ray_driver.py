"""--driver ray: each attempt is one Ray task, supervised on the node where Ray runs it.

Ray's idioms, kept: the item's resources are the task's (`num_cpus`, fractional
`num_gpus`, `memory`, custom resources), so Ray packs and places them; each symbol's data
goes into the object store once (`ray.put`) and every attempt of it takes the reference;
`ray.wait` says which attempts ended; `ray.cancel` stops one. With [ray] num_gpus left unset
and the items' GPU peaks measured on earlier nights, each task asks for the fraction of a
GPU the plan's GPU packing gives it (policy.gpu_share: 1/items per GPU), so Ray packs as
many on a GPU as its memory holds (docs/scheduling.md#gpu-packing). What Ray does not do, the
task does on its node (node.py): a fresh process per attempt, forked from a zygote the Ray
worker keeps (Ray reuses its workers, so torch is imported once per worker, not per item),
the deadline, the memory cap and the whole tree killed (Ray has no per-task timeout, and
its cancel does not reach grandchildren). Engine-level retries are off (`max_retries=0`,
no retry on exceptions, and no OOM retries on a Ray instance we start): the ledger counts
every attempt.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import sha256_bytes
from retrainer.base.config import RaySettings, StorageSettings
from retrainer.base.optional import import_optional
from retrainer.base.resources import (
    Resources,
    detect_gpu_count,
    detect_gpu_memory_mb,
    usable_cpu_count,
)
from retrainer.engine.attempt import AttemptSpec
from retrainer.engine.drivers.cluster import NodeInfo, check_feasible, cluster_resources
from retrainer.engine.drivers.node import NodeAttempt, NodeResult, run_on_node
from retrainer.engine.drivers.protocol import AttemptHandle
from retrainer.engine.drivers.remote import Cancelled, NodeLost, RemoteHandle, Shipping, first_line
from retrainer.engine.reaper import child_pids
from retrainer.engine.supervisor import AttemptLimits
from retrainer.mirror.storage.protocol import StorageClient


def ray_attempt(request: NodeAttempt, data: bytes | None) -> NodeResult:
    """The Ray task: one attempt on the node Ray chose, under the local supervision."""
    ray = import_optional("ray", "ray")
    context = ray.get_runtime_context()
    gpu_ids = tuple(str(g) for g in ray.get_gpu_ids())
    node_id = context.get_node_id()[:12]
    node = f"{os.uname().nodename}/{node_id}"
    return run_on_node(request, data, node=node, node_key=node_id, gpu_ids=gpu_ids)


class RayDriver:
    def __init__(
        self, settings: RaySettings, storage: StorageSettings, preload: Sequence[str], threads: int
    ) -> None:
        """threads is the local driver's concern: here each item's budget is its request;
        the node's local driver adds the worker to what its zygote preloads."""
        self.settings = settings
        self._shipping = Shipping(settings, storage)
        self._preload = tuple(preload)
        self._ray: Any = None
        self._task: Any = None
        self._options: dict[str, Any] = {}
        self._data: dict[Path, tuple[Any, str]] = {}  # data file → (object ref, sha256)
        self._nodes: list[NodeInfo] = []
        self._helpers: set[int] = set()  # a Ray instance we started: its processes

    # -- the cluster -----------------------------------------------------------------
    def start(self) -> None:
        ray = self._ray = import_optional("ray", "ray")
        s = self.settings
        options: dict[str, Any] = {
            "namespace": s.namespace,
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if s.runtime_env:
            options["runtime_env"] = s.runtime_env
        if s.address:
            ray.init(address=s.address, **options)
        else:  # the one-machine case: a Ray instance of this machine, on loopback
            ray.init(
                num_cpus=usable_cpu_count(),
                num_gpus=detect_gpu_count(),
                _node_ip_address="127.0.0.1",
                _system_config={"task_oom_retries": 0},
                **options,
            )
            # Ray's own processes are ours now: never orphans for the sweep to kill.
            self._helpers = set(child_pids(os.getpid()))
        self._nodes = self._live_nodes()
        check_feasible(self._nodes, self.request(), s.address or "this machine (local Ray)")
        # max_calls=0: a GPU task's worker is reused too, so its zygote stays warm.
        self._options = {
            "num_cpus": s.num_cpus,
            "num_gpus": s.num_gpus,
            "memory": s.memory_mb * 2**20 if s.memory_mb else None,
            "resources": s.resources or None,
            "max_retries": 0,
            "retry_exceptions": False,
        }
        self._task = ray.remote(max_calls=0)(ray_attempt)

    def request(self) -> dict[str, float]:
        s = self.settings
        return {
            "CPU": s.num_cpus,
            "GPU": s.num_gpus,
            "memory_mb": float(s.memory_mb or 0),
            **s.resources,
        }

    def resources(self) -> Resources:
        found = cluster_resources(
            self._nodes,
            self.request(),
            max(1, int(self.settings.num_cpus)),
            self.settings.memory_mb,
        )
        if found.gpu_memory_mb is None and found.has_gpu and not self.settings.address:
            # A local Ray instance: this machine's GPUs, as the local driver reads them.
            found = replace(found, gpu_memory_mb=detect_gpu_memory_mb())
        return found

    def _live_nodes(self) -> list[NodeInfo]:
        nodes = []
        for raw in self._ray.nodes():
            if not raw.get("Alive"):
                continue
            res = dict(raw.get("Resources", {}))
            custom = {
                k: float(v)
                for k, v in res.items()
                if k not in ("CPU", "GPU", "memory", "object_store_memory")
                and not k.startswith("node:")
                and not k.startswith("accelerator_type")
            }
            name = f"{raw.get('NodeManagerHostname', '?')}/{str(raw.get('NodeID', ''))[:12]}"
            nodes.append(
                NodeInfo(
                    name,
                    float(res.get("CPU", 0)),
                    float(res.get("GPU", 0)),
                    int(res.get("memory", 0) // 2**20),
                    custom,
                )
            )
        return nodes

    # -- attempts ----------------------------------------------------------------------
    def keep_warm(self, count: int, wait_s: float = 0.0) -> bool:
        return True  # each node's worker keeps its own attempt process warm

    def submit(self, spec: AttemptSpec, limits: AttemptLimits) -> AttemptHandle:
        s = self.settings
        data_ref, sha = None, None
        if not s.shared_root:
            data_ref, sha = self._shipped_data(spec.data_path)
        request = self._shipping.node_attempt(spec, limits, self._preload, sha)
        options = self._options
        if limits.gpu_share is not None:  # the plan's GPU packing ([ray] num_gpus unset)
            options = {**options, "num_gpus": limits.gpu_share}
        ref = self._task.options(**options).remote(request, data_ref)
        return RayHandle(self._ray, ref, spec, limits, s.shared_root, self._shipping.client)

    def _shipped_data(self, path: Path) -> tuple[Any, str]:
        """Each symbol's bars go into the object store once; every attempt shares them."""
        if path not in self._data:
            payload = path.read_bytes()
            self._data[path] = (self._ray.put(payload), sha256_bytes(payload))
        return self._data[path]

    def wait(self, running: Sequence[AttemptHandle], timeout_s: float) -> None:
        refs = [h.ref for h in running if isinstance(h, RayHandle) and not h.has_exited()]
        if refs:
            self._ray.wait(refs, num_returns=1, timeout=max(0.0, timeout_s), fetch_local=False)
        elif timeout_s > 0:
            import time

            time.sleep(timeout_s)

    def helper_pids(self) -> Collection[int]:
        return self._helpers

    def close(self) -> None:
        if self._ray is not None and self._ray.is_initialized():
            self._ray.shutdown()
        self._data = {}


class RayHandle(RemoteHandle):
    def __init__(
        self,
        ray: Any,
        ref: Any,
        spec: AttemptSpec,
        limits: AttemptLimits,
        shared_root: bool,
        storage: StorageClient | None = None,
    ) -> None:
        super().__init__(spec, limits, shared_root, storage)
        self._raymod = ray
        self.ref = ref

    def _finished(self) -> bool:
        ready, _ = self._raymod.wait([self.ref], num_returns=1, timeout=0, fetch_local=False)
        return bool(ready)

    def _result(self) -> NodeResult:
        exceptions = self._raymod.exceptions
        try:
            result: NodeResult = self._raymod.get(self.ref)
        except exceptions.TaskCancelledError as exc:
            raise Cancelled(first_line(exc)) from None
        except (
            exceptions.WorkerCrashedError,
            exceptions.NodeDiedError,
            exceptions.ObjectLostError,
            exceptions.LocalRayletDiedError,
        ) as exc:
            raise NodeLost(f"{type(exc).__name__}: {first_line(exc)}") from None
        except exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None) or exc
            raise RuntimeError(
                f"the node could not run the attempt: {type(cause).__name__}: {first_line(cause)}"
            ) from None
        return result

    def _cancel(self, force: bool) -> None:
        try:
            self._raymod.cancel(self.ref, force=force)
        except Exception:  # ended meanwhile, or the node is gone: nothing left to stop
            pass
