"""What a remote engine runs on a node for one attempt: the same supervision as a local run.

A remote driver (Ray, Dask) hands a node a NodeAttempt; the engine's worker process there
calls run_on_node, which runs the attempt exactly as the local driver does: a fresh process
forked from a preloaded zygote (kept by this process, so torch is imported once per node
process, not once per item), supervised here by the Supervisor (deadline, memory cap, the
whole tree killed, the end classified), with a lifeline to this process, so that nothing
outlives the engine's worker. Without a shared root the attempt writes into node-local
scratch, and its folder and logs go back to the head as one tar.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import artifact_files, atomic_write_bytes, write_manifest
from retrainer.base.config import StorageSettings
from retrainer.engine.attempt import AttemptSpec
from retrainer.engine.drivers.local import LocalDriver
from retrainer.engine.drivers.shipping import (
    AttemptFolders,
    cached_data_file,
    pack,
    remove_tree,
    unpack,
)
from retrainer.engine.supervisor import AttemptLimits
from retrainer.ledger.entries import ItemState, Outcome
from retrainer.mirror.storage.registry import make_storage

POLL_S = 0.5  # the longest a node's loop sleeps without checking for a stop


@dataclass(frozen=True)
class NodeAttempt:
    """What the head sends a node for one attempt (its paths are the head's)."""

    spec: AttemptSpec
    limits: AttemptLimits
    preload: tuple[str, ...]
    shared_root: bool = False
    scratch: str | None = None  # the node's scratch folder; None: its temp folder
    data_sha256: str | None = None  # the shipped data file's hash (without a shared root)
    reuse_payload: bytes | None = None  # a retry's reusable partial outputs, packed
    # Folders packed larger than this go back through the storage instead of the engine.
    max_ship_bytes: int | None = None
    transfer_storage: StorageSettings | None = None
    champion_payload: bytes | None = None  # the champion's model files, packed


@dataclass(frozen=True)
class NodeResult:
    """What a node sends back: the outcome, where and how it ran, the packed folders."""

    outcome: dict[str, Any]
    node: str
    pid: int | None
    payload: bytes | None  # None with a shared root (in place) or through the storage
    start_ms: float  # from the request's arrival on the node to the attempt's hand-over
    transfer: Transfer | None = None  # the packed folders' key in the storage, if there


@dataclass(frozen=True)
class Transfer:
    """A packed attempt too large for the engine's object store, put in the storage."""

    key: str
    sha256: str
    bytes: int


class _NodeDrivers:
    """One local driver per node process and preload: the zygote that forks attempts."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drivers: dict[tuple[tuple[str, ...], int], LocalDriver] = {}

    def get(self, preload: tuple[str, ...], threads: int) -> LocalDriver:
        key = (preload, threads)
        with self._lock:
            driver = self._drivers.get(key)
            if driver is None:
                for old in self._drivers.values():  # another run's trainer: not needed now
                    old.close()
                self._drivers = {}
                driver = LocalDriver(preload, threads)
                driver.start()
                self._drivers[key] = driver
            return driver

    def close(self) -> None:
        with self._lock:
            for driver in self._drivers.values():
                driver.close()
            self._drivers = {}


NODE_DRIVERS = _NodeDrivers()


def run_on_node(
    request: NodeAttempt,
    data: bytes | None,
    *,
    node: str,
    node_key: str,
    should_stop: Callable[[], bool] = lambda: False,
    gpu_ids: tuple[str, ...] = (),
) -> NodeResult:
    """Run one attempt on this node under the local supervision; return what it left.

    should_stop: polled while the attempt runs; True (the head cancelled it) stops it as a
    stopped run stops an item: SIGTERM to the tree, the grace, SIGKILL.
    gpu_ids: the GPUs the engine assigned this attempt (the device it gets).
    node_key: names this node's scratch folder (several nodes may share one machine).
    """
    arrived = time.monotonic()
    spec = request.spec
    folders = _folders(request, node_key)
    spec = _node_spec(request, folders, data, gpu_ids)
    driver = NODE_DRIVERS.get(request.preload, spec.threads)
    handle = driver.submit(spec, request.limits)
    start_ms = (time.monotonic() - arrived) * 1000.0
    stopping = False
    try:
        while not handle.outcome_ready():
            driver.wait([handle], max(0.0, min(POLL_S, handle.next_wakeup() - time.monotonic())))
            handle.enforce_limits(time.monotonic())
            if not stopping and should_stop():
                stopping = True
                handle.terminate()
    except BaseException:  # the engine interrupts us (Ray's cancel): the tree goes first,
        handle.terminate()  # as a stopped run's items go: SIGTERM, the grace, SIGKILL
        while not handle.outcome_ready():
            driver.wait([handle], POLL_S)
            handle.enforce_limits(time.monotonic())
        handle.outcome()
        raise
    outcome = handle.outcome()
    driver.keep_warm(1)  # the next attempt this process runs starts without a fork
    device = f"cuda:{gpu_ids[0]}" if gpu_ids else None
    outcome = replace(outcome, node=node, device=device)
    if outcome.state is ItemState.SUCCESS and not request.shared_root:
        outcome = _with_manifest(outcome, spec.out_dir)
    payload, transfer = None, None
    if not request.shared_root:
        try:
            payload = pack(folders)
            if request.max_ship_bytes is not None and len(payload) > request.max_ship_bytes:
                transfer = _put_in_storage(request, folders, payload)
                payload = None
        finally:  # shipped, or failing the task: the node keeps nothing of the attempt
            remove_tree(folders.out_dir.parent)
    return NodeResult(outcome.to_dict(), node, handle.pid, payload, start_ms, transfer)


def transfer_key(spec: AttemptSpec) -> str:
    return f"transfers/{spec.run_id}/{spec.item_id}-{spec.attempt}.tar"


def _put_in_storage(request: NodeAttempt, folders: AttemptFolders, payload: bytes) -> Transfer:
    """The packed folders through the configured storage (S3…), verified on arrival there;
    the head fetches them by key and checks the sha256."""
    assert request.transfer_storage is not None
    storage = make_storage(request.transfer_storage)
    assert storage is not None
    tar = folders.out_dir.parent / "attempt.tar"
    atomic_write_bytes(tar, payload, durable=False)
    key = transfer_key(request.spec)
    result = storage.put_file(tar, key)  # an UploadError fails the task: the head says so
    return Transfer(key, result.sha256, len(payload))


def _folders(request: NodeAttempt, node_key: str) -> AttemptFolders:
    spec = request.spec
    if request.shared_root:
        return AttemptFolders(spec.out_dir, spec.log_dir, spec.engine_log)
    scratch = Path(request.scratch or tempfile.gettempdir()) / f"retrainer-node-{node_key}"
    # One folder per attempt: an item id "BTC/w0003" names no subfolder.
    item = spec.item_id.replace("/", "~")
    base = scratch / "attempts" / f"{spec.run_id}-{item}-{spec.attempt}-{os.getpid()}"
    return AttemptFolders(base / "out", base / "logs", base / "engine.log")


def _node_spec(
    request: NodeAttempt, folders: AttemptFolders, data: bytes | None, gpu_ids: tuple[str, ...]
) -> AttemptSpec:
    spec = request.spec
    environment = dict(spec.environment)
    device = spec.device
    if gpu_ids:
        # The attempt sees only its GPUs, as the engine assigned them: cuda:0 is the first.
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
        device = "cuda:0"
    if request.shared_root:
        return replace(spec, environment=environment, device=device)
    folders.out_dir.mkdir(parents=True, exist_ok=False)
    folders.log_dir.mkdir(parents=True, exist_ok=True)
    data_path = spec.data_path
    if data is not None and request.data_sha256 is not None:
        scratch = folders.out_dir.parents[2]
        data_path = cached_data_file(scratch, spec.data_path.name, data, request.data_sha256)
    reuse_dir = None
    if request.reuse_payload is not None:
        reuse_dir = folders.out_dir.parent / "reuse"
        unpack(
            request.reuse_payload,
            AttemptFolders(reuse_dir, reuse_dir / "logs", reuse_dir / "engine.log"),
        )
    champion_dir = None
    if request.champion_payload is not None:
        champion_dir = folders.out_dir.parent / "champion"
        unpack(
            request.champion_payload,
            AttemptFolders(champion_dir, champion_dir / "logs", champion_dir / "engine.log"),
        )
    return replace(
        spec,
        out_dir=folders.out_dir,
        log_dir=folders.log_dir,
        engine_log=folders.engine_log,
        data_path=data_path,
        reuse_dir=reuse_dir,
        champion_dir=champion_dir,
        environment=environment,
        device=device,
    )


def _with_manifest(outcome: Outcome, out_dir: Path) -> Outcome:
    """The node's sha256.txt travels with the artifacts: the head checks what arrived."""
    try:
        write_manifest(out_dir, artifact_files(out_dir), durable=False)
    except OSError as exc:
        return replace(
            outcome,
            state=ItemState.FAILED,
            reason=f"could not write the manifest on the node: {exc}",
            error_type=type(exc).__name__,
        )
    return outcome
