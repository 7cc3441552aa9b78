"""What the report shows, gathered from a day's ledger: attempts on their slots, minutes,
net Sharpe, one row per symbol. Pure data; the charts and the page only draw it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from retrainer.base.clock import now_utc
from retrainer.base.errors import BadInputError
from retrainer.ledger.entries import Attempt, ItemState, LedgerEntry, bad_data_reason
from retrainer.views.runview import (
    RunView,
    build_view,
    load_day,
    ordered_runs,
    parse_iso,
    process_alive,
)


@dataclass(frozen=True)
class Bar:
    """One attempt on the timeline."""

    symbol: str
    attempt: int
    lane: int  # the worker slot it ran in
    start: datetime
    end: datetime
    state: str


@dataclass(frozen=True)
class SymbolRow:
    symbol: str
    status: str
    attempts: int
    minutes: float | None
    net_sharpe: float | None
    gross_sharpe: float | None
    accuracy: float | None
    reason: str


@dataclass(frozen=True)
class ReportData:
    day: str
    root: Path
    generated_at: datetime
    runs: list[dict[str, Any]]
    latest: RunView
    bars: list[Bar]
    rows: list[SymbolRow]

    @property
    def minutes(self) -> list[tuple[float, str]]:
        """Each finished attempt's minutes, with how it ended."""
        return [
            ((b.end - b.start).total_seconds() / 60.0, b.state)
            for b in self.bars
            if b.state != ItemState.RUNNING.value
        ]

    @property
    def sharpes(self) -> list[tuple[str, float]]:
        return [(r.symbol, r.net_sharpe) for r in self.rows if r.net_sharpe is not None]


def gather(root: Path, day: str | None) -> ReportData:
    day, state = load_day(root, day)
    runs = ordered_runs(state)
    if not runs:
        raise BadInputError(f"the ledger of {day} records no run yet")
    now = now_utc()
    latest = build_view(
        day, runs[-1], state.entries, now, alive=process_alive(runs[-1]), until=None
    )
    # A bar with no end stops where the latest run finished, or now while it runs.
    finished = runs[-1].get("finished_at")
    open_end = parse_iso(str(finished)) if finished else now
    entries = dict(sorted(state.entries.items()))
    return ReportData(
        day=day,
        root=root,
        generated_at=now,
        runs=runs,
        latest=latest,
        bars=_bars(entries, now, open_end),
        rows=[_row(e) for e in entries.values()],
    )


def _bars(entries: Mapping[str, LedgerEntry], now: datetime, open_end: datetime) -> list[Bar]:
    attempts = sorted(
        ((e.symbol, a) for e in entries.values() for a in e.attempts),
        key=lambda sa: sa[1].started_at,
    )
    lanes = _lanes([a for _, a in attempts], open_end)
    bars = []
    for (symbol, a), lane in zip(attempts, lanes, strict=True):
        start = parse_iso(a.started_at)
        end = parse_iso(a.ended_at) if a.ended_at else max(start, open_end)
        state = a.state.value
        if a.state is ItemState.RUNNING and open_end < now:
            state = ItemState.INTERRUPTED.value  # its run ended without recording it
        bars.append(Bar(symbol, a.number, lane, start, end, state))
    return bars


def _lanes(attempts: list[Attempt], open_end: datetime) -> list[int]:
    """The recorded slot; for attempts from ledgers that predate slots, the first lane free
    at its start (attempts sorted by start)."""
    free_at: dict[int, datetime] = {}
    lanes = []
    for a in attempts:
        start = parse_iso(a.started_at)
        end = parse_iso(a.ended_at) if a.ended_at else open_end
        lane = (
            a.slot
            if a.slot is not None
            else next((n for n in range(len(free_at) + 1) if free_at.get(n, start) <= start), 0)
        )
        free_at[lane] = end
        lanes.append(lane)
    return lanes


def _row(entry: LedgerEntry) -> SymbolRow:
    metrics = entry.metrics or {}
    last = entry.last_attempt
    reason = "" if entry.state is ItemState.SUCCESS or last is None else (last.reason or "")
    reason = bad_data_reason(entry) or reason  # failed without an attempt: its data is bad
    return SymbolRow(
        symbol=entry.symbol,
        status=entry.state.value,
        attempts=len(entry.attempts),
        minutes=entry.train_minutes,
        net_sharpe=_finite(metrics.get("net_sharpe")),
        gross_sharpe=_finite(metrics.get("gross_sharpe")),
        accuracy=_finite(metrics.get("test_accuracy")),
        reason=reason,
    )


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and value == value and abs(value) != float("inf"):
        return float(value)
    return None
