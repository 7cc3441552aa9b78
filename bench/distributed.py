"""The Ray and Dask drivers beside the local one, on the same workloads, in one run.

    unshare -n -p -f --mount-proc sh -c 'ip link set lo up && python -m bench.distributed'

(`make bench` runs it so: Ray binds the machine's address unless it sees only loopback.)
A real Ray cluster (a head without CPUs and two 1-CPU nodes) and a real Dask cluster (a
scheduler and two 1-thread workers) are started once; every figure is a real `retrainer
run` in a subprocess, repeated and interleaved across the drivers. Figures:

- overhead per item: no-op items, two at a time; the batch (first hand-over to last end,
  from the ledger) per item, and the whole command per item;
- sleep efficiency: sleep-bound items two at a time, against the ideal n × sleep ÷ 2;
- multi-node: the same sleep-bound items on 1 node × 1 slot and on 2 nodes × 1 slot
  (≥ 1.9× expected; CPU-bound scaling cannot be shown on a 2-core machine, where two
  nodes share the same two cores);
- the item start: from the attempt's spec made on the head to its process ready to train
  on its node (the summary's worker_startup_ms).

Prints a table and writes bench/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import REPO, print_table, write_results, write_tiny_universe
from bench.retrainer_run import batch_seconds, bench_env
from bench.workloads import SLEEP_S

TRAINERS = {"noop": "bench.trainers:noop", "sleep": "bench.trainers:sleep"}


def _config(
    path: Path,
    data: Path,
    symbols: list[str],
    root: Path,
    kind: str,
    driver: str,
    cluster: dict[str, str],
) -> Path:
    lines = [
        "[run]",
        'mode = "hybrid"',
        "max_concurrent = 2",
        f'symbols = "{",".join(symbols)}"',
        "retries = 0",
        f'root = "{root}"',
        f'driver = "{driver}"',
        "[data]",
        f'path = "{data}"',
        "min_rows = 1000",
        "[trainer]",
        f'plugin = "{TRAINERS[kind]}"',
    ]
    if driver != "local":
        lines += [f"[{driver}]", *(f"{k} = {v}" for k, v in cluster.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_once(
    work: Path, data: Path, symbols: list[str], kind: str, driver: str, cluster: dict[str, str]
) -> dict[str, float]:
    root = work / f"root-{driver}-{kind}-{time.monotonic_ns()}"
    root.mkdir(parents=True)
    config = _config(root / "bench.toml", data, symbols, root, kind, driver, cluster)
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "retrainer", "run", "--config", str(config)],
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    command_s = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{driver} {kind}: exit {done.returncode}\n{done.stderr[-3000:]}")
    (status,) = root.glob("runs/*/status.json")
    ledger = json.loads(status.read_text())
    (summary,) = root.glob("summary/*/engine_summary.json")
    startup = json.loads(summary.read_text()).get("worker_startup_ms") or {}
    return {
        "command_s": command_s,
        "batch_s": batch_seconds(ledger),
        "startup_ms": float(startup.get("median", float("nan"))),
    }


@contextmanager
def ray_cluster() -> Iterator[str]:
    from ray.cluster_utils import Cluster

    os.environ["PYTHONPATH"] = str(REPO)
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "node_ip_address": "127.0.0.1", "include_dashboard": False},
    )
    # "two": both nodes take items; "one": only the first does.
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"one": 1, "two": 1})
    cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={"two": 1})
    cluster.wait_for_nodes()
    try:
        yield str(cluster.address)
    finally:
        cluster.shutdown()  # type: ignore[no-untyped-call]


@contextmanager
def dask_cluster() -> Iterator[str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    env = bench_env()

    def start(*args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    processes = [
        start(
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
        )
    ]
    for name, resources in (("w1", "one=1,two=1"), ("w2", "two=1")):
        processes.append(
            start(
                "distributed.cli.dask_worker",
                address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--no-nanny",
                "--name",
                name,
                "--resources",
                resources,
            )
        )
    try:
        from distributed import Client

        with Client(address, timeout=60, set_as_default=False) as client:  # type: ignore[no-untyped-call]
            client.wait_for_workers(2, timeout=60)
        yield address
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            process.wait(30)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-noop", type=int, default=100)
    parser.add_argument("--n-sleep", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    with (
        tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp,
        ray_cluster() as ray_address,
        dask_cluster() as dask_address,
    ):
        work = Path(tmp)
        symbols = write_tiny_universe(work / "data", max(args.n_noop, args.n_sleep))
        setups: dict[str, tuple[str, dict[str, str]]] = {
            "local": ("local", {}),
            "ray, 2 nodes": (
                "ray",
                {"address": f'"{ray_address}"', "num_cpus": "1", "resources": "{ two = 1 }"},
            ),
            "dask, 2 workers": (
                "dask",
                {"address": f'"{dask_address}"', "resources": "{ two = 1 }"},
            ),
        }
        one_node = {
            "ray, 1 node": (
                "ray",
                {"address": f'"{ray_address}"', "num_cpus": "1", "resources": "{ one = 1 }"},
            ),
            "dask, 1 worker": (
                "dask",
                {"address": f'"{dask_address}"', "resources": "{ one = 1 }"},
            ),
        }
        samples: dict[str, dict[str, list[dict[str, float]]]] = {}
        for driver, cluster in setups.values():  # warm-up: each node's workers
            run_once(work, work / "data", symbols[:4], "noop", driver, cluster)
        for _ in range(args.repeats):
            for name, (driver, cluster) in [*setups.items(), *one_node.items()]:
                for kind, n in (("noop", args.n_noop), ("sleep", args.n_sleep)):
                    if name in one_node and kind == "noop":
                        continue
                    result = run_once(work, work / "data", symbols[:n], kind, driver, cluster)
                    samples.setdefault(name, {}).setdefault(kind, []).append(result)
                    print(
                        f"  {name} {kind} n={n}: batch {result['batch_s']:.2f} s, "
                        f"command {result['command_s']:.2f} s",
                        flush=True,
                    )
    report(samples, args)


def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(samples: dict[str, dict[str, list[dict[str, float]]]], args: Any) -> None:
    ideal_s = args.n_sleep * SLEEP_S / 2
    rows, figures = [], {}
    for name, kinds in samples.items():
        row: dict[str, float | None] = {}
        if "noop" in kinds:
            row["batch_ms_per_item"] = _median(kinds["noop"], "batch_s") / args.n_noop * 1000
            row["command_ms_per_item"] = _median(kinds["noop"], "command_s") / args.n_noop * 1000
            row["startup_ms"] = _median(kinds["noop"], "startup_ms")
        sleep_batch = _median(kinds["sleep"], "batch_s")
        row["sleep_batch_s"] = sleep_batch
        row["sleep_efficiency"] = ideal_s / sleep_batch if "1 " not in name else None
        figures[name] = row
    for two, one in (("ray, 2 nodes", "ray, 1 node"), ("dask, 2 workers", "dask, 1 worker")):
        figures[two]["two_vs_one_node_speedup"] = (figures[one]["sleep_batch_s"] or 0) / (
            figures[two]["sleep_batch_s"] or 1
        )
    for name, row in figures.items():
        rows.append(
            [
                name,
                *(
                    _fmt(row.get(k))
                    for k in (
                        "batch_ms_per_item",
                        "command_ms_per_item",
                        "startup_ms",
                        "sleep_efficiency",
                        "sleep_batch_s",
                        "two_vs_one_node_speedup",
                    )
                ),
            ]
        )
    print_table(
        f"Drivers side by side (median of {args.repeats}; no-op n={args.n_noop}, "
        f"sleep n={args.n_sleep} × {SLEEP_S} s, 2 at a time)",
        [
            "driver",
            "batch ms/item",
            "command ms/item",
            "item start ms",
            "sleep efficiency",
            "sleep batch s",
            "2 nodes ÷ 1 node",
        ],
        rows,
    )
    write_results("distributed", {"sizes": vars(args), "figures": figures, "samples": samples})


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:.3g}"


if __name__ == "__main__":
    main()
