"""Real clusters for the Ray and Dask drivers, started once per test session.

Ray binds the machine's own address unless it sees nothing but loopback, so these tests
run in a private network namespace: `make test` runs this folder under
`unshare -n -p -f --mount-proc` with only `lo` up (every Ray process dies with the
namespace). Run alone, outside one, they are skipped with that reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from retrainer.base.artifacts import Layout
from retrainer.base.clock import now_utc, run_day
from retrainer.ledger.journal import read_ledger
from tests.conftest import REPO, cli_env, write_config

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


def in_private_network() -> bool:
    import socket

    return [name for _, name in socket.if_nameindex()] == ["lo"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if in_private_network():
        return
    skip = pytest.mark.skip(
        reason="needs a private network namespace with only loopback: make test runs "
        "tests/distributed under unshare -n -p -f --mount-proc"
    )
    for item in items:
        if "tests/distributed" in str(item.fspath):
            item.add_marker(skip)


@dataclass
class RayCluster:
    """A head (no CPUs: it only coordinates) and worker nodes, each its own raylet."""

    cluster: Any
    nodes: dict[str, Any] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add(self, name: str, **args: Any) -> Any:
        node = self.cluster.add_node(
            node_ip_address="127.0.0.1", resources={name: 1, **args.pop("resources", {})}, **args
        )
        self.nodes[name] = node
        self.cluster.wait_for_nodes()
        return node

    def remove(self, name: str) -> None:
        self.cluster.remove_node(self.nodes.pop(name))


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[RayCluster]:
    from ray.cluster_utils import Cluster

    os.environ["PYTHONPATH"] = str(REPO)  # the nodes' workers import tests.support.plugins
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 0,
            "node_ip_address": "127.0.0.1",
            "include_dashboard": False,
        },
    )
    ray = RayCluster(cluster)
    # Two CPU nodes that take "cpu_item"s one at a time, and a node with one (logical) GPU.
    ray.add("node_a", num_cpus=1, resources={"cpu_item": 1})
    ray.add("node_b", num_cpus=1, resources={"cpu_item": 1})
    ray.add("gpu_node", num_cpus=4, num_gpus=1)
    try:
        yield ray
    finally:
        cluster.shutdown()


@dataclass
class DaskCluster:
    """`dask scheduler` and `dask worker` processes on 127.0.0.1, as on a real cluster."""

    address: str
    scheduler: subprocess.Popen[bytes]
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def add_worker(self, name: str, resources: str = "slots=1") -> None:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "distributed.cli.dask_worker",
                self.address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                "1",
                "--no-dashboard",
                "--name",
                name,
                "--resources",
                resources,
                "--no-nanny",
            ],
            env=cli_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.workers[name] = worker
        _wait_for_workers(self.address, set(self.workers))

    def kill_worker(self, name: str) -> None:
        worker = self.workers.pop(name)
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    def close(self) -> None:
        for process in [*self.workers.values(), self.scheduler]:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in [*self.workers.values(), self.scheduler]:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_for_workers(address: str, names: set[str], within_s: float = 60) -> None:
    from distributed import Client

    with Client(address, timeout=30, set_as_default=False) as client:
        deadline = time.monotonic() + within_s
        while time.monotonic() < deadline:
            seen = {str(w["name"]) for w in client.scheduler_info()["workers"].values()}
            if names <= seen:
                return
            time.sleep(0.2)
    raise AssertionError(f"dask workers {names} did not join {address}")


@pytest.fixture(scope="session")
def dask_cluster() -> Iterator[DaskCluster]:
    port = _free_port()
    scheduler = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "distributed.cli.dask_scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
        ],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cluster = DaskCluster(f"tcp://127.0.0.1:{port}", scheduler)
    try:
        cluster.add_worker("w1")
        cluster.add_worker("w2")
        yield cluster
    finally:
        cluster.close()


def cluster_config(
    tmp_path: Path,
    small_data: Path,
    behaviours: dict[str, str],
    driver: str,
    cluster: dict[str, Any],
    sections: dict[str, dict[str, Any]] | None = None,
    **run: Any,
) -> Path:
    return write_config(
        tmp_path / "retrainer.toml",
        {
            "run": {
                "root": str(tmp_path / "root"),
                "symbols": ",".join(behaviours),
                "driver": driver,
                "retries": 0,
                "backoff_base_s": 0.05,
                "backoff_cap_s": 0.1,
                "kill_grace_s": 0.5,
                "stop_grace_s": 0.5,
                "timeout_minutes": 1.0,
                **run,
            },
            "data": {"path": str(small_data)},
            "trainer": {
                "plugin": "tests.support.plugins:light",
                "params": {
                    "pid_dir": str(tmp_path / "pids"),
                    "behaviours": behaviours,
                    "slow_s": 2.0,
                },
            },
            driver: {"scratch": str(tmp_path / "scratch"), **cluster},
            **(sections or {}),
        },
    )


def run_retrainer(
    tmp_path: Path, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "retrainer", *args],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_retrainer(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "retrainer", *args],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def ledger_of(tmp_path: Path) -> dict[str, Any]:
    layout, day = Layout(tmp_path / "root"), run_day(now_utc())
    return dict(read_ledger(layout.status_path(day), layout.journal_path(day)).entries)
