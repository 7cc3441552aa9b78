"""What one run is doing, read from its ledger: counts, running symbols, failures, ETA.

Built only from the ledger's entries and the run's record, so the live display inside a
run and `retrainer status` from another shell show the same figures. A symbol belongs to
a run when it has an attempt that started inside the run's time span, or when its entry
names the run (queued, not started yet); a symbol skipped by the plan is only counted
(`to_skip` in the run record).
"""

from __future__ import annotations

import socket
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import psutil

from retrainer.base.artifacts import Layout
from retrainer.base.clock import now_utc
from retrainer.base.errors import BadInputError
from retrainer.ledger.entries import FAILED_STATES, Attempt, ItemState, LedgerEntry
from retrainer.ledger.journal import LedgerState, read_ledger


class Phase(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    DEAD = "died"  # no finish recorded and its process is gone (SIGKILL, power loss)


@dataclass(frozen=True)
class RunningItem:
    symbol: str
    attempt: int
    elapsed_s: float
    device: str
    slot: int | None


@dataclass(frozen=True)
class Failure:
    symbol: str
    state: str
    reason: str
    attempts: int
    retrying: bool  # failed, but the run will try it again after a backoff


@dataclass(frozen=True)
class RunView:
    day: str
    run_id: str
    phase: Phase
    started_at: str
    finished_at: str | None
    exit_code: int | None
    mode: str
    window: int
    total: int  # symbols in the run: to run + skipped
    done: int
    failed: int  # for good: no retry left (timeouts included)
    retrying: int
    skipped: int
    interrupted: int
    queued: int
    running: tuple[RunningItem, ...]
    failures: tuple[Failure, ...]
    elapsed_s: float
    eta_s: float | None  # None: unknown (nothing finished yet) or the run is over

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["phase"] = self.phase.value
        return raw


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def latest_day(root: Path) -> str:
    """The most recent day under <root>/runs that has a ledger."""
    days = days_under(root)
    if not days:
        raise BadInputError(f"no run ledger under {root}/runs")
    return days[-1]


def load_day(root: Path, day: str | None) -> tuple[str, LedgerState]:
    """A day's ledger (the latest day when day is None); bad input when there is none."""
    layout = Layout(root)
    day = day or latest_day(root)
    status, journal = layout.status_path(day), layout.journal_path(day)
    if not status.exists() and not journal.exists():
        raise BadInputError(f"no run ledger for {day} under {root}/runs")
    return day, read_ledger(status, journal)


def ordered_runs(state: LedgerState) -> list[dict[str, Any]]:
    return sorted(state.runs.values(), key=lambda r: str(r.get("started_at", "")))


def view_day(root: Path, day: str | None, now: datetime | None = None) -> RunView:
    """The latest run of a day, as `retrainer status` shows it."""
    day, state = load_day(root, day)
    runs = ordered_runs(state)
    if not runs:
        raise BadInputError(f"the ledger of {day} records no run yet")
    return build_view(
        day, runs[-1], state.entries, now or now_utc(), alive=process_alive(runs[-1]), until=None
    )


def process_alive(run: Mapping[str, Any]) -> bool | None:
    """Whether the run's process still runs; None when it ran on another host."""
    if run.get("host") not in (None, socket.gethostname()):
        return None
    try:
        process = psutil.Process(int(run["pid"]))
        # A recycled pid belongs to a process started after the run.
        started = parse_iso(str(run["started_at"])).timestamp()
        return process.create_time() <= started + 1.0
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False


def attempts_in_run(entry: LedgerEntry, run: Mapping[str, Any], until: str | None) -> list[Attempt]:
    """The symbol's attempts that started within the run's span (ISO UTC text sorts)."""
    start = str(run.get("started_at", ""))
    end = run.get("finished_at") or until
    return [
        a
        for a in entry.attempts
        if a.started_at >= start and (end is None or a.started_at <= str(end))
    ]


def build_view(
    day: str,
    run: Mapping[str, Any],
    entries: Mapping[str, LedgerEntry],
    now: datetime,
    alive: bool | None,
    until: str | None,
) -> RunView:
    finished_at = run.get("finished_at")
    phase = Phase.FINISHED if finished_at else (Phase.DEAD if alive is False else Phase.RUNNING)
    started = parse_iso(str(run["started_at"]))
    end = parse_iso(str(finished_at)) if finished_at else now
    tally = _Tally(run, phase, now)
    for symbol, entry in sorted(entries.items()):
        tally.add(symbol, entry, attempts_in_run(entry, run, until))
    to_run = int(run.get("to_run", tally.members))
    not_started = max(0, to_run - tally.started)
    # Once the run is over, what never started was cut short by its stop or its death.
    queued = not_started if phase is Phase.RUNNING else 0
    window = max(1, int(run.get("window", 1)))
    return RunView(
        day=day,
        run_id=str(run["run_id"]),
        phase=phase,
        started_at=str(run["started_at"]),
        finished_at=str(finished_at) if finished_at else None,
        exit_code=run.get("exit_code"),
        mode=str(run.get("mode", "")),
        window=window,
        total=to_run + int(run.get("to_skip", 0)),
        done=tally.counts[ItemState.SUCCESS],
        failed=tally.failed,
        retrying=tally.retrying,
        skipped=int(run.get("to_skip", 0)),
        interrupted=tally.counts[ItemState.INTERRUPTED] + not_started - queued,
        queued=queued,
        running=tuple(tally.running),
        failures=tuple(tally.failures),
        elapsed_s=max(0.0, (end - started).total_seconds()),
        eta_s=_eta(tally, queued, window) if phase is Phase.RUNNING else None,
    )


class _Tally:
    """Walks the entries once: each symbol's state in this run."""

    def __init__(self, run: Mapping[str, Any], phase: Phase, now: datetime) -> None:
        self.run_id = run.get("run_id")
        self.retries = int(run.get("retries", 0))
        self.phase, self.now = phase, now
        self.members = self.started = self.failed = self.retrying = 0
        self.counts = {state: 0 for state in ItemState}
        self.running: list[RunningItem] = []
        self.failures: list[Failure] = []
        self.finished_s: list[float] = []

    def add(self, symbol: str, entry: LedgerEntry, attempts: list[Attempt]) -> None:
        if not attempts:
            self.members += entry.run_id == self.run_id
            return
        self.members += 1
        self.started += 1
        last = attempts[-1]
        state = last.state
        if state is ItemState.RUNNING and self.phase is not Phase.RUNNING:
            state = ItemState.INTERRUPTED  # its run is over: it was not seen to finish
        self.counts[state] += 1
        self.finished_s += [
            a.seconds for a in attempts if a.state is ItemState.SUCCESS and a.seconds is not None
        ]
        if state is ItemState.RUNNING:
            elapsed = (self.now - parse_iso(last.started_at)).total_seconds()
            self.running.append(
                RunningItem(symbol, last.number, max(0.0, elapsed), last.device, last.slot)
            )
        elif state in FAILED_STATES:
            retrying = self.phase is Phase.RUNNING and len(attempts) <= self.retries
            self.retrying += retrying
            self.failed += not retrying
            self.failures.append(
                Failure(symbol, state.value, last.reason or "", len(attempts), retrying)
            )

    def mean_s(self) -> float | None:
        return statistics.fmean(self.finished_s) if self.finished_s else None


def _eta(tally: _Tally, queued: int, window: int) -> float | None:
    """Remaining work over the window: queued and retrying items at the mean attempt time,
    running ones for what is left of it. Unknown until an item has finished."""
    mean_s = tally.mean_s()
    if mean_s is None:
        return None
    left = (queued + tally.retrying) * mean_s
    left += sum(max(0.0, mean_s - r.elapsed_s) for r in tally.running)
    return left / window


def hms(seconds: float | None) -> str:
    """0:05:12; '?' when unknown."""
    if seconds is None:
        return "?"
    total = int(round(seconds))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def days_under(root: Path) -> list[str]:
    return sorted(
        {
            p.parent.name
            for pattern in ("runs/*/status.json", "runs/*/ledger.jsonl")
            for p in root.glob(pattern)
        }
    )
