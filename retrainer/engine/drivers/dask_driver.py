"""--driver dask: each attempt is one Dask task, supervised on the worker that runs it.

Dask's idioms, kept: `Client.submit` with the item's worker resources, `Client.scatter`
for each symbol's data (once), a worker plugin that owns what lives on a worker for the
whole night (the zygote that forks attempts: torch imported once per worker, not per item),
futures and `wait` for their ends, and `Future.cancel` to stop one. Any Dask cluster works,
so dask-jobqueue on SLURM or PBS and dask-kubernetes work unchanged.

What Dask does not do, the task does on its worker (node.py): a fresh process per attempt,
its deadline, its memory cap, the whole tree killed (a cancelled Dask task's thread runs
on; ours notices and kills the attempt). Engine-level retries are off: tasks are submitted
with retries=0, and the scheduler's allowed-failures is set to 0, so a task whose worker
died fails at once (KilledWorker) instead of running again elsewhere behind the ledger's
back: our own retry runs it, counted.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

import structlog

from retrainer.base.artifacts import sha256_bytes
from retrainer.base.config import DaskSettings, StorageSettings
from retrainer.base.optional import import_optional
from retrainer.base.resources import Resources, usable_cpu_count
from retrainer.engine.attempt import AttemptSpec
from retrainer.engine.drivers.cluster import NodeInfo, check_feasible, cluster_resources
from retrainer.engine.drivers.node import NodeAttempt, NodeResult, run_on_node
from retrainer.engine.drivers.protocol import AttemptHandle
from retrainer.engine.drivers.remote import Cancelled, NodeLost, RemoteHandle, Shipping, first_line
from retrainer.engine.reaper import child_pids
from retrainer.engine.supervisor import AttemptLimits
from retrainer.mirror.storage.protocol import StorageClient

RUNNING_STATES = frozenset({"executing", "long-running"})
FETCH_TIMEOUT_S = 300.0  # a finished task's result (its packed folders) on its way here


def dask_attempt(request: NodeAttempt, data: bytes | None) -> NodeResult:
    """The Dask task: one attempt on this worker, under the local supervision."""
    distributed = import_optional("distributed", "dask")
    worker = distributed.get_worker()
    key = distributed.worker.thread_state.key

    def cancelled() -> bool:  # the head cancelled it, or its client is gone
        task = worker.state.tasks.get(key)
        return task is None or task.state not in RUNNING_STATES

    node = str(worker.name) if worker.name is not None else worker.address
    key_safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in node)
    return run_on_node(request, data, node=node, node_key=key_safe, should_stop=cancelled)


def _no_engine_retries(dask_scheduler: Any) -> int:
    """On the scheduler: a task whose worker dies fails at once; returns the old value."""
    previous = int(dask_scheduler.allowed_failures)
    dask_scheduler.allowed_failures = 0
    return previous


class DaskDriver:
    def __init__(
        self, settings: DaskSettings, storage: StorageSettings, preload: Sequence[str], threads: int
    ) -> None:
        """threads is the local driver's concern: here each item's budget is its request;
        the node's local driver adds the worker to what its zygote preloads."""
        self.settings = settings
        self._shipping = Shipping(settings, storage)
        self._preload = tuple(preload)
        self._client: Any = None
        self._cluster: Any = None
        self._data: dict[Path, tuple[Any, str]] = {}
        self._nodes: list[NodeInfo] = []
        self._helpers: set[int] = set()  # a LocalCluster's worker processes

    def start(self) -> None:
        distributed = import_optional("distributed", "dask")
        dask = import_optional("dask", "dask")
        s = self.settings
        log = structlog.get_logger()
        if s.address:
            self._client = distributed.Client(s.address, set_as_default=False)
        else:  # the one-machine case: a LocalCluster on loopback, one thread per worker
            with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
                self._cluster = distributed.LocalCluster(
                    n_workers=s.local_workers or usable_cpu_count(),
                    threads_per_worker=1,
                    processes=True,
                    host="127.0.0.1",
                    dashboard_address=None,
                    resources=s.resources or None,
                )
            self._client = distributed.Client(self._cluster, set_as_default=False)
            self._helpers = set(child_pids(os.getpid()))  # never orphans for the sweep
        previous = self._client.run_on_scheduler(_no_engine_retries)
        if previous:
            log.info(
                "dask_allowed_failures_set",
                previous=previous,
                now=0,
                why="a task whose worker died fails at once; our retries rerun it",
            )
        from retrainer.engine.drivers.dask_plugin import PLUGIN_NAME, RetrainerNodePlugin

        self._client.register_plugin(RetrainerNodePlugin(), name=PLUGIN_NAME)
        self._nodes = self._live_nodes()
        check_feasible(self._nodes, self.request(), s.address or "this machine (LocalCluster)")

    def request(self) -> dict[str, float]:
        return {"threads": 1.0, **self.settings.resources}

    def resources(self) -> Resources:
        return cluster_resources(self._nodes, self.request(), self.settings.threads_per_item)

    def _live_nodes(self) -> list[NodeInfo]:
        workers = self._client.scheduler_info(n_workers=-1).get("workers", {})
        return [
            NodeInfo(
                str(w.get("name", address)),
                float(w.get("nthreads", 0)),
                0.0,
                int(w.get("memory_limit", 0) // 2**20),
                {
                    "threads": float(w.get("nthreads", 0)),
                    **{k: float(v) for k, v in (w.get("resources") or {}).items()},
                },
            )
            for address, w in sorted(workers.items())
        ]

    def keep_warm(self, count: int, wait_s: float = 0.0) -> bool:
        return True  # each worker keeps its own attempt process warm

    def submit(self, spec: AttemptSpec, limits: AttemptLimits) -> AttemptHandle:
        s = self.settings
        data, sha = (None, None) if s.shared_root else self._shipped_data(spec.data_path)
        request = self._shipping.node_attempt(spec, limits, self._preload, sha)
        key = f"retrainer-{spec.run_id}-{spec.item_id}-{spec.attempt}"
        future = self._client.submit(
            dask_attempt,
            request,
            data,
            key=key,
            pure=False,
            retries=0,
            resources=s.resources or None,
        )
        return DaskHandle(future, spec, limits, s.shared_root, self._shipping.client)

    def _shipped_data(self, path: Path) -> tuple[Any, str]:
        """Each symbol's bars are scattered once; every attempt of it shares them."""
        cached = self._data.get(path)
        if cached is None or cached[0].status != "finished":  # lost with its worker: again
            payload = path.read_bytes()
            self._data[path] = (self._client.scatter(payload, hash=False), sha256_bytes(payload))
        return self._data[path]

    def wait(self, running: Sequence[AttemptHandle], timeout_s: float) -> None:
        futures = [h.future for h in running if isinstance(h, DaskHandle) and not h.has_exited()]
        if not futures:
            time.sleep(max(0.0, timeout_s))
            return
        distributed = import_optional("distributed", "dask")
        try:
            with self._client.as_current():  # not the process's default client
                distributed.wait(
                    futures, timeout=max(0.001, timeout_s), return_when="FIRST_COMPLETED"
                )
        except TimeoutError:
            pass

    def helper_pids(self) -> Collection[int]:
        return self._helpers

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None
        self._data = {}


class DaskHandle(RemoteHandle):
    def __init__(
        self,
        future: Any,
        spec: AttemptSpec,
        limits: AttemptLimits,
        shared_root: bool,
        storage: StorageClient | None = None,
    ) -> None:
        super().__init__(spec, limits, shared_root, storage)
        self.future = future

    def _finished(self) -> bool:
        return bool(self.future.done())

    def _result(self) -> NodeResult:
        distributed = import_optional("distributed", "dask")
        asked = self._terminated or self._forced
        if self.future.cancelled():
            if not asked:  # the cluster dropped it: its worker or its data was lost
                raise NodeLost("the Dask cluster cancelled the task (its worker or data lost)")
            raise Cancelled("the Dask task was cancelled")
        try:
            result: NodeResult = self.future.result(timeout=FETCH_TIMEOUT_S)  # done: it is there
        except distributed.client.FutureCancelledError as exc:
            if not asked:
                raise NodeLost(f"the Dask cluster cancelled the task: {first_line(exc)}") from None
            raise Cancelled(first_line(exc)) from None
        except distributed.KilledWorker as exc:
            raise NodeLost(f"KilledWorker: {first_line(exc)}") from None
        except Exception as exc:
            raise RuntimeError(
                f"the node could not run the attempt: {type(exc).__name__}: {first_line(exc)}"
            ) from None
        return result

    def _cancel(self, force: bool) -> None:
        try:
            self.future.cancel()
        except Exception:  # ended meanwhile, or the client is closing
            pass
