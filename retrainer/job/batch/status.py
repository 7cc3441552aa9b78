"""What Batch and the bucket say of a submitted night: the array job's state (its
children, every page) and the items' records, counted as `retrainer status` counts.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from retrainer.job.batch.batchplan import BatchPlan
from retrainer.job.batch.client import BatchClient
from retrainer.job.batch.exits import EXIT_FOR_GOOD
from retrainer.job.batch.records import ItemRecord, attempt_of
from retrainer.ledger.entries import ItemState, Outcome
from retrainer.mirror.storage.protocol import StorageClient

ENDED = frozenset({"SUCCEEDED", "FAILED"})


@dataclass(frozen=True)
class JobState:
    job_id: str
    status: str  # SUBMITTED, PENDING, RUNNABLE, STARTING, RUNNING, SUCCEEDED, FAILED
    status_reason: str = ""
    created_at_ms: int | None = None
    stopped_at_ms: int | None = None
    # The children by array index (a plain job: its own state at index 0).
    children: dict[int, dict[str, Any]] = field(default_factory=dict)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def child_counts(self) -> dict[str, int]:
        return dict(Counter(str(c.get("status")) for c in self.children.values()))

    @property
    def wall_s(self) -> float | None:
        if self.created_at_ms is None or self.stopped_at_ms is None:
            return None
        return max(0.0, (self.stopped_at_ms - self.created_at_ms) / 1000.0)


def job_state(client: BatchClient, job_id: str) -> JobState:
    described = client.describe([job_id])
    if not described:
        raise LookupError(f"Batch knows no job {job_id}")
    job = described[0]
    children: dict[int, dict[str, Any]] = {}
    if job.get("arrayProperties", {}).get("size"):
        for child in client.children(job_id):
            index = _index_of(child)
            if index is not None:
                children[index] = child
    else:
        children[0] = job
    return JobState(
        job_id,
        str(job.get("status")),
        str(job.get("statusReason") or ""),
        _ms(job.get("createdAt")),
        _ms(job.get("stoppedAt")),
        children,
    )


def with_attempts(client: BatchClient, job: JobState) -> JobState:
    """The children as describe_jobs tells them (list_jobs' summaries carry no attempts):
    each one's attempts, with their exit codes and reasons. Asked once, when the job has
    ended and its night is assembled (a watcher's every look needs only the summaries)."""
    ids = [str(c["jobId"]) for c in job.children.values() if c.get("jobId")]
    if not ids or set(ids) == {job.job_id}:  # a plain job: describe_jobs told it already
        return job
    described = {str(d.get("jobId")): d for d in client.describe(ids)}
    children = {
        index: {**child, **described.get(str(child.get("jobId")), {})}
        for index, child in job.children.items()
    }
    return replace(job, children=children)


@dataclass(frozen=True)
class BatchAttempt:
    """One attempt of a child as Batch tells it (describe_jobs' attempts[], in order: the
    n-th is the one its child saw as AWS_BATCH_JOB_ATTEMPT=n)."""

    number: int
    exit_code: int | None = None
    reason: str = ""  # attempts[].container.reason ("OutOfMemoryError: …")
    status_reason: str = ""  # attempts[].statusReason ("Host EC2 … terminated.")
    started_ms: int | None = None
    stopped_ms: int | None = None

    @property
    def seconds(self) -> float:
        if self.started_ms is None or self.stopped_ms is None:
            return 0.0
        return max(0.0, (self.stopped_ms - self.started_ms) / 1000.0)

    def outcome(self) -> Outcome:
        """What an attempt that left no record ended as, by what Batch says of it: Batch's
        timeout → timeout; its host or task taken away (a spot reclaim, a stopped task,
        SIGKILL) → interrupted; anything else → failed."""
        said = "; ".join(
            p
            for p in (
                f"exit {self.exit_code}" if self.exit_code is not None else "no exit code",
                self.status_reason,
                self.reason,
            )
            if p
        )
        why = f"its child left no record in the bucket (Batch: {said})"
        text = f"{self.status_reason} {self.reason}".lower()
        if "timeout" in text or "duration exceeded" in text:
            state = ItemState.TIMEOUT
        elif (
            self.exit_code == SIGKILLED
            or "host ec2" in text
            or "spot" in text
            or "terminat" in text
            or "task stopped" in text
        ):
            state = ItemState.INTERRUPTED
        else:
            state = ItemState.FAILED
        return Outcome(state, why, self.exit_code, error_type="NoRecord")


SIGKILLED = 137  # 128 + SIGKILL: a container killed outright


def batch_attempts(child: dict[str, Any]) -> list[BatchAttempt]:
    """A described child's attempts, numbered from 1."""
    out = []
    for n, raw in enumerate(child.get("attempts") or [], start=1):
        container = raw.get("container") or {}
        code = container.get("exitCode")
        out.append(
            BatchAttempt(
                n,
                int(code) if isinstance(code, int) else None,
                str(container.get("reason") or ""),
                str(raw.get("statusReason") or ""),
                _ms(raw.get("startedAt")),
                _ms(raw.get("stoppedAt")),
            )
        )
    return out


def read_records(storage: StorageClient, plan: BatchPlan) -> dict[str, list[ItemRecord]]:
    """Every item's records, by item id, in attempt order."""
    keys = storage.list_keys(f"{plan.folder}/records")
    found: dict[str, list[ItemRecord]] = {}
    with tempfile.TemporaryDirectory(prefix="retrainer-records-") as folder:
        for n, key in enumerate(keys):
            if attempt_of(key) is None:
                continue
            path = Path(folder) / f"{n}.json"
            storage.get_file(key, path)
            record = ItemRecord.from_dict(json.loads(path.read_text("utf-8")))
            found.setdefault(record.item_id, []).append(record)
    return {k: sorted(v, key=lambda r: r.attempt) for k, v in found.items()}


def read_plan(storage: StorageClient, folder: str) -> BatchPlan:
    with tempfile.TemporaryDirectory(prefix="retrainer-plan-") as scratch:
        path = Path(scratch) / "plan.json"
        storage.get_file(f"{folder}/plan.json", path)
        return BatchPlan.from_dict(json.loads(path.read_text("utf-8")))


@dataclass(frozen=True)
class NightCounts:
    """The night as its records tell it so far."""

    total: int
    succeeded: list[str]
    failed: dict[str, str]  # item id → reason of its last attempt (it may be retried)
    waiting: list[str]  # no record yet: pending, running, or its child died unrecorded

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "succeeded": len(self.succeeded),
            "failed": len(self.failed),
            "waiting": len(self.waiting),
            "failures": self.failed,
        }


def count(plan: BatchPlan, records: dict[str, list[ItemRecord]]) -> NightCounts:
    succeeded, failed, waiting = [], {}, []
    for item in plan.items:
        mine = records.get(item.item_id)
        if not mine:
            waiting.append(item.item_id)
            continue
        last = mine[-1].result
        if last.state is ItemState.SUCCESS:
            succeeded.append(item.item_id)
        else:
            final = " (for good)" if mine[-1].exit_code == EXIT_FOR_GOOD else ""
            failed[item.item_id] = f"{last.state.value}: {last.reason}{final}"
    return NightCounts(len(plan.items), succeeded, failed, waiting)


def _index_of(child: dict[str, Any]) -> int | None:
    """A child's id is the parent's with ":<index>"."""
    index = child.get("arrayProperties", {}).get("index")
    if isinstance(index, int):
        return index
    tail = str(child.get("jobId", "")).rpartition(":")[2]
    return int(tail) if tail.isdigit() else None


def _ms(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None
