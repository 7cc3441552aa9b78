"""The head's side of a remote attempt: a handle the engine's loop asks, as it asks a local
supervisor, whether the attempt ended, how, and to stop it.

The supervision itself runs on the node (node.py). The head keeps one backstop: past the
deadline, the kill grace and a margin for the node to report, it asks the engine to cancel
the attempt by force (Ray's `ray.cancel(force=True)`, Dask's cancel): an attempt whose
node cannot even say that it killed it still ends.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import replace
from pathlib import Path

from retrainer.base.artifacts import sha256_bytes
from retrainer.base.config import DaskSettings, RaySettings, StorageSettings
from retrainer.engine.attempt import AttemptSpec
from retrainer.engine.drivers.node import NodeAttempt, NodeResult, Transfer
from retrainer.engine.drivers.shipping import (
    AttemptFolders,
    champion_payload,
    reuse_payload,
    unpack,
    verify_shipped,
)
from retrainer.engine.supervisor import AttemptLimits
from retrainer.ledger.entries import ItemState, Outcome
from retrainer.mirror.storage.protocol import StorageClient, UploadError
from retrainer.mirror.storage.registry import make_storage

BACKSTOP_MARGIN_S = 30.0  # for the node to kill the tree and report, past the grace


class Shipping:
    """How attempts travel to and from nodes: the root shared or not, and which finished
    folders come back through the storage (those over max_ship_mb, when one is set)."""

    def __init__(self, cluster: RaySettings | DaskSettings, storage: StorageSettings) -> None:
        self.shared_root = cluster.shared_root
        self.scratch = cluster.scratch
        through_storage = storage.kind != "none" and not cluster.shared_root
        self.transfer_storage = storage if through_storage else None
        self.max_ship_bytes = int(cluster.max_ship_mb * 2**20) if through_storage else None
        self.client = make_storage(storage) if through_storage else None  # the head's

    def node_attempt(
        self,
        spec: AttemptSpec,
        limits: AttemptLimits,
        preload: tuple[str, ...],
        data_sha256: str | None,
    ) -> NodeAttempt:
        return NodeAttempt(
            spec,
            limits,
            preload,
            self.shared_root,
            self.scratch,
            data_sha256,
            reuse_payload(spec, self.shared_root),
            self.max_ship_bytes,
            self.transfer_storage,
            champion_payload(spec, self.shared_root),
        )


class NodeLost(Exception):
    """The node or the engine's worker process running the attempt died."""


class Cancelled(Exception):
    """The engine cancelled the attempt (the head asked it to)."""


class RemoteHandle(ABC):
    def __init__(
        self,
        spec: AttemptSpec,
        limits: AttemptLimits,
        shared_root: bool,
        storage: StorageClient | None = None,
    ) -> None:
        self.spec = spec
        self.storage = storage  # where large attempt folders come back through
        self.limits = limits
        self.shared_root = shared_root
        self.started_monotonic = time.monotonic()
        self.pid: int | None = None  # the node's, once it reported
        self.node: str | None = None
        self.start_ms: float | None = None
        self._backstop_at = (
            self.started_monotonic + limits.timeout_s + limits.kill_grace_s + BACKSTOP_MARGIN_S
        )
        self._terminated = False
        self._forced = False
        self._done = False

    # -- what the engine's backend answers -------------------------------------------
    @abstractmethod
    def _finished(self) -> bool:
        """The engine holds the attempt's result (or its error). Never blocks."""

    @abstractmethod
    def _result(self) -> NodeResult:
        """The node's result; raises NodeLost, Cancelled, or the attempt's own error."""

    @abstractmethod
    def _cancel(self, force: bool) -> None:
        """Ask the engine to stop the attempt: gracefully (the node terminates the tree)
        or by force (the engine's own kill)."""

    # -- the AttemptHandle protocol --------------------------------------------------
    def has_exited(self) -> bool:
        if not self._done:
            self._done = self._finished()
        return self._done

    def outcome_ready(self) -> bool:
        return self.has_exited()

    def next_wakeup(self) -> float:
        return self._backstop_at

    def enforce_limits(self, now: float) -> None:
        if not self._forced and now >= self._backstop_at and not self.has_exited():
            self._forced = True
            self._cancel(force=True)

    def terminate(self) -> None:
        if not self._terminated:
            self._terminated = True
            self._cancel(force=False)

    def kill(self) -> None:
        self._forced = True
        self._cancel(force=True)

    def outcome(self) -> Outcome:
        try:
            result = self._result()
        except NodeLost as exc:
            return Outcome(
                ItemState.FAILED, f"node lost: {exc}", error_type="NodeLost", node=self.node
            )
        except Cancelled as exc:
            if self._forced and not self._terminated:
                return Outcome(
                    ItemState.TIMEOUT,
                    f"timed out: the node did not report {BACKSTOP_MARGIN_S:g} s "
                    "past the deadline and the kill grace; cancelled by the "
                    "engine",
                    error_type="Cancelled",
                    node=self.node,
                )
            return Outcome(
                ItemState.INTERRUPTED, f"cancelled: {exc}", error_type="Cancelled", node=self.node
            )
        except Exception as exc:  # the engine's worker failed before the attempt ended
            return Outcome(
                ItemState.FAILED,
                str(exc) or type(exc).__name__,
                error_type=type(exc).__name__,
                node=self.node,
            )
        self.pid, self.node, self.start_ms = result.pid, result.node, result.start_ms
        outcome = Outcome.from_dict(result.outcome)
        payload = result.payload
        if result.transfer is not None:
            try:
                payload = self._fetch(result.transfer)
            except (UploadError, OSError) as exc:
                return replace(
                    outcome,
                    state=ItemState.FAILED,
                    error_type="ShippingError",
                    reason=f"the attempt's folder from {outcome.node} could not be "
                    f"fetched from the storage: {exc}",
                )
        if payload is not None:
            outcome = self._receive(payload, outcome)
        return outcome

    def _fetch(self, transfer: Transfer) -> bytes:
        if self.storage is None:
            raise OSError("no [storage] configured on the head")
        local = self.spec.log_dir / f".{Path(transfer.key).name}"
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.storage.get_file(transfer.key, local)
            payload = local.read_bytes()
        finally:
            local.unlink(missing_ok=True)
        if sha256_bytes(payload) != transfer.sha256:
            raise OSError(f"{transfer.key}: sha256 mismatch after download")
        return payload

    def _receive(self, payload: bytes, outcome: Outcome) -> Outcome:
        """Unpack the node's folders under the root; a success must verify on arrival."""
        spec = self.spec
        try:
            unpack(payload, AttemptFolders(spec.out_dir, spec.log_dir, spec.engine_log))
        except OSError as exc:
            return replace(
                outcome,
                state=ItemState.FAILED,
                error_type=type(exc).__name__,
                reason=f"could not write the attempt's files from {outcome.node}: {exc}",
            )
        if outcome.state is ItemState.SUCCESS:
            problems = verify_shipped(spec.out_dir)
            if problems:
                return replace(
                    outcome,
                    state=ItemState.FAILED,
                    error_type="ShippingError",
                    reason=f"artifacts from {outcome.node} do not verify: {problems[0]}",
                )
        return outcome


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__
