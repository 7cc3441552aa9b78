"""What one run is doing, read from its ledger: counts, running symbols, failures, ETA.

Built only from the ledger's entries and the run's record, so the live display inside a
run and `retrainer status` from another shell show the same figures. A symbol belongs to
a run when it has an attempt that started inside the run's time span, or when its entry
names the run (queued, not started yet); a symbol skipped by the plan is only counted
(`to_skip` in the run record). One the run was to train and never started, because it
stopped first, counts as `not_started`, whatever an earlier run of the day made of it.

The day's runs are the ledger's beside the invocations it does not record
(retrainer.ledger.invocations): a `retrainer run` that stopped before its night started,
or one that could not record its own end.
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
from retrainer.ledger.entries import (
    FAILED_STATES,
    NO_RETRY,
    Attempt,
    ItemState,
    LedgerEntry,
    bad_data_mark,
)
from retrainer.ledger.invocations import days_with_invocations, read_invocations
from retrainer.ledger.journal import LedgerState, read_ledger
from retrainer.plan.forecast import remaining_s


class Phase(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    DEAD = "died"  # no finish recorded and its process is gone (SIGKILL, power loss)
    DID_NOT_START = "did_not_start"  # stopped before its night started: bad input, the lock…


# How far a run that did not start got (retrainer.job.invocation's stages).
STAGE_WORDS = {
    "trainer": "while it loaded the trainer",
    "lock": "while it took the lock",
    "driver": "while it started its processes",
    "plan": "while it planned",
    "night": "while it opened the night",
}


@dataclass(frozen=True)
class SearchLine:
    """A searched symbol in one line: its candidates done / total, the best so far."""

    symbol: str
    total: int
    done: int
    failed: int
    metric: str
    best: float | None
    best_candidate: str | None

    @property
    def text(self) -> str:
        line = f"{self.symbol} search {self.done}/{self.total} done, {self.failed} failed"
        if self.best is not None:
            line += f", best {self.metric} {self.best:.4f} ({self.best_candidate})"
        return line


def search_lines(run: Mapping[str, Any], entries: Mapping[str, LedgerEntry]) -> list[SearchLine]:
    """The run record's searched symbols (its `search`), counted from the day's entries."""
    search = run.get("search")
    if not isinstance(search, Mapping):
        return []
    metric, sign = str(search.get("metric")), 1 if search.get("direction") == "min" else -1
    out = []
    for symbol, total in dict(search.get("candidates") or {}).items():
        mine = {k: e for k, e in entries.items() if k.partition("/")[0] == symbol and "/" in k}
        done = {k: e for k, e in mine.items() if e.state is ItemState.SUCCESS}
        scored = []
        for item_id, entry in done.items():
            value = (entry.metrics or {}).get(metric)
            if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
                scored.append((sign * float(value), item_id.partition("/")[2]))
        best = min(scored) if scored else None
        out.append(
            SearchLine(
                symbol,
                int(total),
                len(done),
                sum(1 for e in mine.values() if e.state in FAILED_STATES),
                metric,
                sign * best[0] if best else None,
                best[1] if best else None,
            )
        )
    return out


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
    not_started: int = 0  # to train, never started: the run stopped (or died) first
    reason: str | None = None  # why a run ended without its night, or could not record it
    stage: str | None = None  # how far a run that did not start got
    previous: RunView | None = None  # did not start: the day's latest run that did
    searches: tuple[SearchLine, ...] = ()  # a parameter search: one line per symbol

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["phase"] = self.phase.value
        if self.previous is not None:
            raw["previous"] = self.previous.to_dict()
        return raw


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text)


def latest_day(root: Path) -> str:
    """The most recent day under <root>/runs with a ledger or an invocation's record."""
    days = days_under(root)
    if not days:
        raise BadInputError(f"no run ledger under {root}/runs")
    return days[-1]


def load_day(root: Path, day: str | None) -> tuple[str, LedgerState]:
    """A day's ledger (the latest day when day is None); bad input when there is none."""
    layout = Layout(root)
    day = day or latest_day(root)
    status, journal = layout.status_path(day), layout.journal_path(day)
    if not status.exists() and not journal.exists() and day not in days_with_invocations(layout):
        raise BadInputError(f"no run ledger for {day} under {root}/runs")
    return day, read_ledger(status, journal)


def day_runs(root: Path, day: str, state: LedgerState) -> list[dict[str, Any]]:
    """The ledger's runs and the invocations it does not record, oldest first. A record of
    a run the ledger has tells how it ended when the run could not record that itself."""
    runs = {str(r["run_id"]): dict(r) for r in state.runs.values()}
    for record in read_invocations(Layout(root), day):
        run = runs.setdefault(str(record["run_id"]), record)
        if run is not record:
            run.update({k: record[k] for k in ("finished_at", "exit_code", "reason")})
    return sorted(runs.values(), key=lambda r: str(r.get("started_at", "")))


def ordered_runs(state: LedgerState) -> list[dict[str, Any]]:
    return sorted(state.runs.values(), key=lambda r: str(r.get("started_at", "")))


def view_day(root: Path, day: str | None, now: datetime | None = None) -> RunView:
    """The latest run of a day, as `retrainer status` shows it. One that did not start is
    shown with the day's latest run that did, unless that one still runs: then a later
    invocation was only refused by its lock, and the running night is what matters."""
    day, state = load_day(root, day)
    runs = day_runs(root, day, state)
    if not runs:
        raise BadInputError(f"the ledger of {day} records no run yet")
    now = now or now_utc()
    started = [r for r in runs if r.get("started") is not False]
    night = None
    if started:
        run = started[-1]
        night = build_view(day, run, state.entries, now, alive=process_alive(run), until=None)
    latest = runs[-1]
    if latest.get("started") is False and not (night and night.phase is Phase.RUNNING):
        return not_started_view(day, latest, night)
    assert night is not None  # the latest run started, or an earlier one still runs
    return night


def not_started_view(day: str, run: Mapping[str, Any], previous: RunView | None) -> RunView:
    started = parse_iso(str(run["started_at"]))
    finished_at = run.get("finished_at")
    end = parse_iso(str(finished_at)) if finished_at else started
    return RunView(
        day=day,
        run_id=str(run["run_id"]),
        phase=Phase.DID_NOT_START,
        started_at=str(run["started_at"]),
        finished_at=str(finished_at) if finished_at else None,
        exit_code=run.get("exit_code"),
        mode=str(run.get("mode", "")),
        window=1,
        total=0,
        done=0,
        failed=0,
        retrying=0,
        skipped=0,
        interrupted=0,
        queued=0,
        running=(),
        failures=(),
        elapsed_s=max(0.0, (end - started).total_seconds()),
        eta_s=None,
        reason=str(run.get("reason") or ""),
        stage=str(run.get("stage") or ""),
        previous=previous,
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
    unstarted = max(0, to_run - tally.started)
    # While the run goes, what has not started is queued; once it is over, what never
    # started was cut short by its stop or its death.
    queued = unstarted if phase is Phase.RUNNING else 0
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
        total=to_run + int(run.get("to_skip", 0)) + int(run.get("bad_data", 0)),
        done=tally.counts[ItemState.SUCCESS],
        failed=tally.failed,
        retrying=tally.retrying,
        skipped=int(run.get("to_skip", 0)),
        interrupted=tally.counts[ItemState.INTERRUPTED],
        queued=queued,
        running=tuple(tally.running),
        failures=tuple(tally.failures),
        elapsed_s=max(0.0, (end - started).total_seconds()),
        eta_s=_eta(tally, queued, window, run.get("expected_s"))
        if phase is Phase.RUNNING
        else None,
        not_started=unstarted - queued,
        reason=run.get("reason"),
        searches=tuple(search_lines(run, entries)),
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
        self.started_ids: set[str] = set()

    def add(self, symbol: str, entry: LedgerEntry, attempts: list[Attempt]) -> None:
        if not attempts:
            mark = bad_data_mark(entry)
            if mark is not None and mark.get("run_id") == self.run_id:  # failed unstarted
                self.failed += 1
                self.failures.append(Failure(symbol, ItemState.FAILED.value, mark["why"], 0, False))
                return
            self.members += entry.run_id == self.run_id
            return
        self.members += 1
        self.started += 1
        self.started_ids.add(symbol)
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
            retrying = (
                self.phase is Phase.RUNNING
                and len(attempts) <= self.retries
                and NO_RETRY not in (last.reason or "")  # denied: the retry budget is spent
            )
            self.retrying += retrying
            self.failed += not retrying
            self.failures.append(
                Failure(symbol, state.value, last.reason or "", len(attempts), retrying)
            )

    def mean_s(self) -> float | None:
        return statistics.fmean(self.finished_s) if self.finished_s else None


def _eta(tally: _Tally, queued: int, window: int, expected: Any = None) -> float | None:
    """Remaining work over the window. With the plan's expected durations (the run
    record's `expected_s`, in start order): the forecast's rule replayed on what is left,
    running items for what is left of theirs. Without: queued and retrying items at the
    mean attempt time, running ones for what is left of it; unknown until one finished."""
    if isinstance(expected, Mapping) and expected:
        return _forecast_eta(tally, expected, window)
    mean_s = tally.mean_s()
    if mean_s is None:
        return None
    left = (queued + tally.retrying) * mean_s
    left += sum(max(0.0, mean_s - r.elapsed_s) for r in tally.running)
    return left / window


def _forecast_eta(tally: _Tally, expected: Mapping[str, Any], window: int) -> float:
    seconds = {item: float(s) for item, s in expected.items() if isinstance(s, int | float)}
    typical = statistics.median(seconds.values()) if seconds else 0.0
    retrying = {f.symbol for f in tally.failures if f.retrying}
    queue = [
        seconds.get(item, typical)
        for item in expected
        if item not in tally.started_ids or item in retrying
    ]
    running = [max(0.0, seconds.get(r.symbol, typical) - r.elapsed_s) for r in tally.running]
    return remaining_s(queue, running, window)


def hms(seconds: float | None) -> str:
    """0:05:12; '?' when unknown."""
    if seconds is None:
        return "?"
    total = int(round(seconds))
    return f"{total // 3600}:{total % 3600 // 60:02d}:{total % 60:02d}"


def days_under(root: Path) -> list[str]:
    """Days with a ledger or an invocation's record, oldest first."""
    ledgers = {
        p.parent.name
        for pattern in ("runs/*/status.json", "runs/*/ledger.jsonl")
        for p in root.glob(pattern)
    }
    return sorted(ledgers | days_with_invocations(Layout(root)))
