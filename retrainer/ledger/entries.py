"""Records of the scheduler: item states, attempts, ledger entries, outcomes.

Records are frozen dataclasses with to/from dict; states are str enums, so the ledger,
the summary and the logs all spell them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any


class ItemState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMEOUT = "timeout"
    INTERRUPTED = "interrupted"  # the scheduler was stopped while it ran; reruns next time


FAILED_STATES = frozenset({ItemState.FAILED, ItemState.TIMEOUT})


class UploadState(StrEnum):
    NONE = "none"  # no storage configured
    PENDING = "pending"
    UPLOADED = "uploaded"
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome:
    """How one attempt ended, as the supervisor classified it."""

    state: ItemState
    reason: str
    exit_code: int | None = None
    error_type: str | None = None
    stack: tuple[str, ...] = ()
    metrics: dict[str, Any] | None = None
    startup_ms: float | None = None
    node: str | None = None  # where it ran, when a remote driver ran it
    device: str | None = None  # the device the engine assigned there, if the head did not
    # Its process tree's peak RSS (the supervisor's samples and the process's own
    # ru_maxrss, the larger) and torch.cuda.max_memory_allocated on its device, if it used one.
    peak_rss_mb: float | None = None
    gpu_peak_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        raw = dict(vars(self))
        raw["stack"] = list(self.stack)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Outcome:
        return cls(
            **{**raw, "state": ItemState(raw["state"]), "stack": tuple(raw.get("stack", ()))}
        )


@dataclass(frozen=True)
class Attempt:
    number: int
    state: ItemState
    started_at: str
    artifact_dir: str
    device: str
    threads: int
    pid: int | None = None
    ended_at: str | None = None
    seconds: float | None = None
    reason: str | None = None
    exit_code: int | None = None
    error_type: str | None = None
    stack: tuple[str, ...] = ()
    slot: int | None = None  # the worker slot it ran in (for the report's timeline)
    node: str | None = None  # the machine it ran on, for remote drivers
    peak_rss_mb: float | None = None  # its process tree's peak RSS, as the supervisor saw it
    gpu_peak_mb: float | None = None  # torch.cuda.max_memory_allocated, when it used a GPU
    # Two stages: "prepare" or "train"; None: one stage (and not written to the ledger).
    stage: str | None = None

    def ended(self, outcome: Outcome, ended_at: str, seconds: float) -> Attempt:
        return replace(
            self,
            state=outcome.state,
            ended_at=ended_at,
            seconds=round(seconds, 3),
            reason=outcome.reason,
            exit_code=outcome.exit_code,
            error_type=outcome.error_type,
            stack=outcome.stack,
            node=outcome.node or self.node,
            device=outcome.device or self.device,
            peak_rss_mb=_mb(outcome.peak_rss_mb),
            gpu_peak_mb=_mb(outcome.gpu_peak_mb),
        )

    def to_dict(self) -> dict[str, Any]:
        # A shallow copy of the fields (asdict deep-copies every value, a cost paid for
        # every ledger line); the values are only encoded, never changed.
        raw = dict(vars(self))
        raw["stack"] = list(self.stack)
        if self.stage is None:
            del raw["stage"]
        return raw

    @property
    def prepare_only(self) -> bool:
        """The prepare stage of two: no model, no duration of the item's training."""
        return self.stage == "prepare"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Attempt:
        stack = tuple(raw.get("stack", ()))
        return cls(**{**raw, "state": ItemState(raw["state"]), "stack": stack})


def _mb(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


@dataclass(frozen=True)
class LedgerEntry:
    """One item's state for one UTC day: the truth about what is done.

    The ledger is keyed by item_id: the symbol for a nightly item (and then not repeated in
    the JSON); later work shapes name an item by its symbol and what else sets it apart."""

    symbol: str
    state: ItemState
    updated_at: str
    why: str = ""  # why the plan ran or skipped it
    attempts: tuple[Attempt, ...] = ()
    artifact_dir: str | None = None  # the successful attempt's folder, relative to the root
    manifest_sha256: str | None = None  # sha256 of that folder's sha256.txt
    train_minutes: float | None = None
    metrics: dict[str, Any] | None = None
    upload: UploadState = UploadState.NONE
    upload_error: str | None = None
    run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    item_id: str = ""
    # The promotion gate's decision on this success (registry.gate.Promotion.to_dict):
    # decision (promoted, first_model, kept_champion, not_promoted), reason, basis, checks.
    promotion: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.item_id:
            object.__setattr__(self, "item_id", self.symbol)

    @property
    def last_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    def with_attempt(self, attempt: Attempt, **changes: Any) -> LedgerEntry:
        """Replace the attempt of the same number, or append it."""
        kept = tuple(a for a in self.attempts if a.number != attempt.number)
        return replace(self, attempts=(*kept, attempt), state=attempt.state, **changes)

    def to_dict(self) -> dict[str, Any]:
        raw = dict(vars(self))  # shallow, as Attempt.to_dict
        raw["attempts"] = [a.to_dict() for a in self.attempts]
        if self.item_id == self.symbol:
            del raw["item_id"]
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LedgerEntry:
        return cls(
            **{
                **raw,
                "state": ItemState(raw["state"]),
                "upload": UploadState(raw.get("upload", UploadState.NONE)),
                "attempts": tuple(Attempt.from_dict(a) for a in raw.get("attempts", ())),
            }
        )


# An item whose data file was bad (the plan's "fail", [data] on_bad = "skip") is recorded
# failed without an attempt; LedgerEntry.extra keeps why, when and in which run.
BAD_DATA = "bad_data"


def failed_on_bad_data(
    previous: LedgerEntry | None, symbol: str, why: str, at: str, run_id: str
) -> LedgerEntry:
    """The item's entry once the plan found its data bad: failed, with no new attempt
    (earlier attempts of the day are kept)."""
    mark = {"why": why, "at": at, "run_id": run_id}
    if previous is None:
        return LedgerEntry(
            symbol, ItemState.FAILED, at, why=why, run_id=run_id, extra={BAD_DATA: mark}
        )
    return replace(
        previous,
        state=ItemState.FAILED,
        updated_at=at,
        why=why,
        run_id=run_id,
        extra={**previous.extra, BAD_DATA: mark},
    )


def bad_data_mark(entry: LedgerEntry) -> dict[str, str] | None:
    """The latest bad-data failure of the entry's day: why, at, run_id (None: none)."""
    mark = entry.extra.get(BAD_DATA)
    return mark if isinstance(mark, dict) else None


def bad_data_reason(entry: LedgerEntry) -> str | None:
    """Why the entry is failed, if that is its bad data (no attempt started since)."""
    mark = bad_data_mark(entry)
    if mark is None or entry.state is not ItemState.FAILED:
        return None
    last = entry.last_attempt
    if last is not None and last.started_at > str(mark.get("at", "")):
        return None
    return str(mark.get("why", ""))


# A symbol skipped as quarantined (it failed too many nights in a row) is recorded skipped;
# LedgerEntry.extra keeps the failed nights behind that (their ends, the last reason), so
# that its streak outlives the days of ledgers a plan reads.
QUARANTINED = "quarantined"


def skipped_in_quarantine(
    previous: LedgerEntry | None,
    symbol: str,
    why: str,
    at: str,
    run_id: str,
    failed_at: tuple[str, ...],
    last_failure: str,
) -> LedgerEntry:
    """The item's entry once the plan skipped it as quarantined (earlier attempts of the
    day are kept; a failure of the day, by an earlier --force run, joins its streak)."""
    if previous is not None and previous.state in FAILED_STATES:
        failed_at = (*failed_at, previous.updated_at)
    mark = {"failed_at": list(failed_at), "last_failure": last_failure, "run_id": run_id}
    entry = previous or LedgerEntry(symbol, ItemState.SKIPPED, at)
    return replace(
        entry,
        state=ItemState.SKIPPED,
        updated_at=at,
        why=why,
        run_id=run_id,
        extra={**entry.extra, QUARANTINED: mark},
    )


def quarantine_mark(entry: LedgerEntry) -> tuple[tuple[str, ...], str] | None:
    """A skipped entry's quarantine: the ends of the failed nights behind it and the last
    failure's reason (None: not skipped as quarantined, or a mark it cannot read)."""
    mark = entry.extra.get(QUARANTINED)
    if entry.state is not ItemState.SKIPPED or not isinstance(mark, dict):
        return None
    failed_at = mark.get("failed_at")
    if not isinstance(failed_at, list) or not all(isinstance(t, str) for t in failed_at):
        return None
    return tuple(failed_at), str(mark.get("last_failure") or "")


# A failed attempt's reason ends with "; no retry: WHY" when the run denied it a retry its
# `retries` allowed (the run's retry budget was spent): its failure is final.
NO_RETRY = "; no retry: "
