"""The peers: the same workloads through joblib/loky, ProcessPoolExecutor, Dask and Ray.

    python -m bench.peers --system dask --k 2 --jobs noop:1000,cpu:16 --repeats 3

One call starts the system with k worker processes, warms it (k sleep items, so that all
k workers have started), times each job `repeats` times on that warm pool, shuts it down
and prints one JSON line. The suite runs each call in a fresh interpreter, Ray's inside a
private network namespace. Optional: a system whose package is missing is reported as
such, never an error.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from typing import Any, Protocol

from bench.workloads import run_item


class Peer(Protocol):
    def start(self, k: int) -> None: ...

    def run(self, kind: str, n: int) -> None: ...

    def close(self) -> None: ...


class Loky:
    """joblib.Parallel with its default loky backend: reusable worker processes."""

    def start(self, k: int) -> None:
        from joblib import Parallel

        self._parallel = Parallel(n_jobs=k, backend="loky")

    def run(self, kind: str, n: int) -> None:
        from joblib import delayed

        self._parallel(delayed(run_item)(kind, i) for i in range(n))

    def close(self) -> None:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True)


class ProcessPool:
    """concurrent.futures.ProcessPoolExecutor: k forked worker processes, reused."""

    def start(self, k: int) -> None:
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(max_workers=k)

    def run(self, kind: str, n: int) -> None:
        list(self._pool.map(run_item, [kind] * n, range(n)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class Dask:
    """A dask.distributed LocalCluster: k single-threaded worker processes on 127.0.0.1."""

    def start(self, k: int) -> None:
        from distributed import Client, LocalCluster

        self._cluster = LocalCluster(
            n_workers=k,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        self._client = Client(self._cluster)

    def run(self, kind: str, n: int) -> None:
        futures = self._client.map(run_item, [kind] * n, range(n), pure=False)
        self._client.gather(futures)

    def close(self) -> None:
        self._client.close()
        self._cluster.close()


class Ray:
    """Ray tasks on a local node of k CPUs; run only inside `unshare -n` (see bench.suite)."""

    def start(self, k: int) -> None:
        import ray

        ray.init(
            num_cpus=k,
            include_dashboard=False,
            log_to_driver=False,
            _node_ip_address="127.0.0.1",
            configure_logging=False,
        )
        self._task = ray.remote(num_cpus=1)(run_item)

    def run(self, kind: str, n: int) -> None:
        import ray

        ray.get([self._task.remote(kind, i) for i in range(n)])

    def close(self) -> None:
        import ray

        ray.shutdown()


PEERS: dict[str, type[Loky | ProcessPool | Dask | Ray]] = {
    "loky": Loky,
    "processpool": ProcessPool,
    "dask": Dask,
    "ray": Ray,
}
# The module a system needs, and the pip extra that brings it.
REQUIRES = {"loky": "joblib", "processpool": "concurrent", "dask": "distributed", "ray": "ray"}
LABELS = {
    "loky": "joblib/loky",
    "processpool": "ProcessPoolExecutor",
    "dask": "Dask LocalCluster",
    "ray": "Ray",
}
# Can one item be stopped alone, its process killed, without losing the pool's others?
ISOLATION = {
    "retrainer": "yes: a process per item; deadline kills its whole tree",
    "loky": "no: items share reused workers; a timeout cannot kill one item",
    "processpool": "no: items share reused workers; a stuck item blocks its worker",
    "dask": "no: items share reused workers; cancel does not stop a running item",
    "ray": "partly: workers are reused, but ray.cancel(force=True) kills an item's worker",
}


def available(system: str) -> bool:
    return importlib.util.find_spec(REQUIRES[system]) is not None


def measure(system: str, k: int, jobs: list[tuple[str, int]], repeats: int) -> dict[str, Any]:
    peer = PEERS[system]()
    began = time.perf_counter()
    peer.start(k)
    peer.run("sleep", k)  # every worker up before anything is timed
    start_s = time.perf_counter() - began
    walls: dict[str, list[float]] = {}
    try:
        for kind, n in jobs:
            for _ in range(repeats):
                began = time.perf_counter()
                peer.run(kind, n)
                walls.setdefault(f"{kind}:{n}", []).append(time.perf_counter() - began)
    finally:
        peer.close()
    return {"system": system, "k": k, "start_s": start_s, "walls": walls}


def parse_jobs(text: str) -> list[tuple[str, int]]:
    jobs = []
    for part in text.split(","):
        kind, _, n = part.partition(":")
        jobs.append((kind, int(n)))
    return jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--system", choices=sorted(PEERS), required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--jobs", required=True, help="kind:n,kind:n")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = measure(args.system, args.k, parse_jobs(args.jobs), args.repeats)
    print("PEER_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
