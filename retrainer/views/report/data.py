"""What the report shows, gathered from a day's ledger: attempts on their slots, minutes,
net Sharpe, one row per symbol. Pure data; the charts and the page only draw it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import Layout
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

# A two-stage item's prepare attempt that succeeded, on the timeline.
PREPARED = "prepared"


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
    net_sharpe_se: float | None = None
    accuracy_edge: float | None = None  # accuracy minus always-the-majority-class
    accuracy_edge_se: float | None = None
    trades: int | None = None
    test_days: float | None = None
    model: str = ""  # the gate's decision: promoted, first_model, kept_champion (why)…
    stale: bool = False  # its data's last bar was older than [data] stale_after_hours


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
    stale = stale_symbols(Layout(root).summary_path(day))
    return ReportData(
        day=day,
        root=root,
        generated_at=now,
        runs=runs,
        latest=latest,
        bars=_bars(entries, now, open_end),
        rows=[_row(e, stale=symbol in stale) for symbol, e in entries.items()],
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
        elif a.prepare_only and a.state is ItemState.SUCCESS:
            state = PREPARED  # two stages: the item's features, not its model
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


def stale_symbols(summary_path: Path) -> set[str]:
    """The symbols the day's latest summary found stale (none if it has no summary)."""
    try:
        summary = json.loads(summary_path.read_text("utf-8"))
    except (OSError, ValueError):
        return set()
    stale = summary.get("stale") if isinstance(summary, dict) else None
    return {str(s) for s in stale} if isinstance(stale, list) else set()


def model_label(entry: LedgerEntry) -> str:
    """`promoted`, `first_model`, `kept_champion (why)`; `fresh` for a symbol skipped as
    unchanged since its champion; empty when the gate never saw it."""
    if entry.promotion:
        decision = str(entry.promotion.get("decision", ""))
        reason = str(entry.promotion.get("reason", ""))
        if decision in ("kept_champion", "not_promoted") and reason:
            return f"{decision} ({reason})"
        return decision
    if entry.state is ItemState.SKIPPED and entry.why.startswith("fresh"):
        return "fresh"
    return ""


def _row(entry: LedgerEntry, stale: bool = False) -> SymbolRow:
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
        net_sharpe_se=_finite(metrics.get("net_sharpe_se")),
        accuracy_edge=_finite(metrics.get("accuracy_edge")),
        accuracy_edge_se=_finite(metrics.get("accuracy_edge_se")),
        trades=_count(metrics.get("trades")),
        test_days=_finite(metrics.get("test_days")),
        model=model_label(entry),
        stale=stale,
    )


def _count(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and value == value and abs(value) != float("inf"):
        return float(value)
    return None
