"""What past nights measured, read from their ledgers: how long each symbol takes, how much
memory it needs, and how many nights in a row it has failed.

The plan orders, admits and forecasts by this. A ledger that is missing, torn or from an
older version is skipped with a note, never a crash: history only makes a night smarter,
it is never needed for a night to run.
"""

from __future__ import annotations

import bisect
import re
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import Layout, item_symbol
from retrainer.ledger.entries import (
    FAILED_STATES,
    Attempt,
    ItemState,
    LedgerEntry,
    quarantine_mark,
)
from retrainer.ledger.journal import SCHEMA_VERSION, LedgerState, read_ledger

DAY_FOLDER = re.compile(r"^\d{8}Z$")
# Recent nights weigh more: a symbol that grew last week is planned at its new size.
EWMA_ALPHA = 0.3
DAYS_READ = 14
# The head of a snapshot names its schema (retrainer.ledger.journal writes it first).
SCHEMA_HEAD = re.compile(rb'"schema"\s*:\s*(\d+)')


@dataclass(frozen=True)
class SymbolHistory:
    symbol: str
    # EWMA of its successful attempts' durations: one stage's, or with two stages the
    # train stage's alone (the window's slots are what a night's length depends on; a
    # prepare attempt runs on slots of its own and counts for neither duration nor peaks).
    seconds: float | None = None
    peak_rss_mb: float | None = None  # the largest peak RSS of its recent successes
    gpu_peak_mb: float | None = None  # the largest GPU peak of its recent successes
    samples: int = 0  # successful attempts behind those figures
    failed_nights: int = 0  # the latest nights in a row that ended with it failed
    last_failure: str = ""  # the reason of the latest of those
    # When each of those nights ended with it failed (its ledger entry's updated_at),
    # oldest first: a release from quarantine counts only the nights after it.
    failed_at: tuple[str, ...] = ()
    # The inputs of its latest challenger the gate kept out, and why (freshness: the same
    # inputs train the same model, which the same gate would keep out again).
    kept_out_key: str | None = None
    kept_out_why: str = ""


@dataclass(frozen=True)
class History:
    symbols: Mapping[str, SymbolHistory] = field(default_factory=dict)
    days: tuple[str, ...] = ()  # the ledgers read, oldest first
    notes: tuple[str, ...] = ()  # the ledgers skipped, and why
    # A night's start to its first attempt's start (the zygote's imports, the first wave's
    # forks), the median over the runs read; None: no run has started an item yet.
    startup_s: float | None = None

    def of(self, symbol: str) -> SymbolHistory:
        return self.symbols.get(symbol) or SymbolHistory(symbol)


def read_history(layout: Layout, today: str, days: int = DAYS_READ) -> History:
    """The last `days` ledgers up to today's (today's own attempts count for durations and
    memory; only finished nights count for failure streaks)."""
    found, notes, startups = _ledgers(layout, today, days)
    per_symbol: dict[str, list[Attempt]] = {}
    streaks: dict[str, _Streak] = {}
    judged: dict[str, tuple[str | None, str]] = {}
    for day, entries in found:
        for item_id, entry in entries.items():
            symbol = item_symbol(item_id)  # a search's candidates count for their symbol
            if entry.promotion and entry.state is ItemState.SUCCESS:
                judged[symbol] = _kept_out(entry.promotion)
            per_symbol.setdefault(symbol, []).extend(
                a
                for a in entry.attempts
                if a.state is ItemState.SUCCESS and a.seconds and not a.prepare_only
            )
        if day != today:
            for symbol, entry in _night_of_each_symbol(entries).items():
                streaks[symbol] = _streak(streaks.get(symbol, NO_STREAK), entry)
    symbols = {
        symbol: replace(
            _summarise(symbol, per_symbol.get(symbol, []), streaks.get(symbol, NO_STREAK)),
            kept_out_key=judged.get(symbol, (None, ""))[0],
            kept_out_why=judged.get(symbol, (None, ""))[1],
        )
        for symbol in set(per_symbol) | set(streaks) | set(judged)
    }
    startup_s = statistics.median(startups) if startups else None
    return History(symbols, tuple(day for day, _ in found), tuple(notes), startup_s)


def _night_of_each_symbol(entries: Mapping[str, LedgerEntry]) -> dict[str, LedgerEntry]:
    """How each symbol's night ended: its entry, or for a searched symbol (its candidates
    "BTC/c03") a success if any candidate succeeded, else its last failed candidate: a
    symbol whose every candidate fails night after night is quarantined as any other."""
    nights: dict[str, LedgerEntry] = {}
    for item_id, entry in entries.items():
        symbol = item_symbol(item_id)
        if symbol == item_id:
            nights[symbol] = entry
            continue
        earlier = nights.get(symbol)
        if earlier is None or _outranks(entry, earlier):
            nights[symbol] = entry
    return nights


def _outranks(entry: LedgerEntry, other: LedgerEntry) -> bool:
    if (entry.state is ItemState.SUCCESS) != (other.state is ItemState.SUCCESS):
        return entry.state is ItemState.SUCCESS
    return entry.updated_at > other.updated_at


def _ledgers(
    layout: Layout, today: str, days: int
) -> tuple[list[tuple[str, Mapping[str, LedgerEntry]]], list[str], list[float]]:
    """The days' entries, the notes on the ledgers skipped, and each run's startup."""
    runs = layout.root / "runs"
    try:
        names = sorted(p.name for p in runs.iterdir() if DAY_FOLDER.match(p.name))
    except OSError:
        return [], [], []
    chosen = [name for name in names if name <= today][-days:]
    found: list[tuple[str, Mapping[str, LedgerEntry]]] = []
    notes: list[str] = []
    startups: list[float] = []
    for day in chosen:
        problem = _snapshot_problem(layout.status_path(day))
        if problem is not None:
            notes.append(f"history: the ledger of {day} was skipped ({problem})")
            continue
        try:
            state = read_ledger(layout.status_path(day), layout.journal_path(day))
            startups += _startups(state)
        except Exception as exc:  # an old or damaged ledger: history is a hint, not a need
            notes.append(f"history: the ledger of {day} was skipped ({type(exc).__name__}: {exc})")
            continue
        found.append((day, state.entries))
    return found, notes, startups


def _snapshot_problem(path: Path) -> str | None:
    """Why a day's status.json cannot be history: torn (not whole JSON) or written by
    another version of the ledger. None: fine, or absent (its journal may hold the day).
    Only its first and last bytes are read."""
    try:
        with path.open("rb") as file:
            head = file.read(256)
            file.seek(max(0, path.stat().st_size - 16))
            tail = file.read()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"status.json cannot be read: {exc.strerror}"
    if not head.lstrip().startswith(b"{") or not tail.rstrip().endswith(b"}"):
        return "status.json is torn: not whole JSON"
    schema = SCHEMA_HEAD.search(head)
    if schema is None:
        return "status.json names no schema: an older version's ledger"
    if int(schema[1]) != SCHEMA_VERSION:
        return f"status.json is ledger schema {int(schema[1])}; this version reads {SCHEMA_VERSION}"
    return None


def _startups(state: LedgerState) -> list[float]:
    """Each run's start to its first attempt's start, in seconds (ISO UTC text sorts)."""
    starts = sorted(a.started_at for e in state.entries.values() for a in e.attempts)
    out = []
    for run in state.runs.values():
        began, ended = run.get("started_at"), run.get("finished_at")
        if not isinstance(began, str):
            continue
        at = bisect.bisect_left(starts, began)
        if at == len(starts) or (isinstance(ended, str) and starts[at] > ended):
            continue  # it started no attempt
        seconds = _seconds_between(began, starts[at])
        if seconds is not None and seconds < 3600.0:
            out.append(seconds)
    return out


def _seconds_between(start: Any, end: Any) -> float | None:
    if not isinstance(start, str) or not isinstance(end, str):
        return None
    try:
        return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()
    except (ValueError, TypeError):
        return None


# A failure streak: when each failed night ended, oldest first; the latest one's reason.
_Streak = tuple[tuple[str, ...], str]
NO_STREAK: _Streak = ((), "")


def _streak(previous: _Streak, entry: LedgerEntry) -> _Streak:
    """A night that ended with the symbol failed adds one; a success resets; a night that
    skipped it (done, fresh, quarantined) leaves the streak as it was, and one that skipped
    it as quarantined brings back the nights its mark names (read beyond the days read)."""
    if entry.state in FAILED_STATES:
        last = entry.last_attempt
        reason = (last.reason if last and last.reason else entry.why) or ""
        return (*previous[0], entry.updated_at), reason
    if entry.state is ItemState.SUCCESS:
        return NO_STREAK
    mark = quarantine_mark(entry)
    if mark is not None:
        return tuple(sorted({*previous[0], *mark[0]})), previous[1] or mark[1]
    return previous


def _kept_out(promotion: Mapping[str, object]) -> tuple[str | None, str]:
    """The inputs key of a challenger the gate kept out (None: it became champion, or
    its decision carries no key), and the gate's reason."""
    if promotion.get("decision") not in ("kept_champion", "not_promoted"):
        return None, ""
    key = promotion.get("inputs_key")
    reason = str(promotion.get("reason", ""))
    if promotion.get("mode") != "gated" or not isinstance(key, str):
        return None, ""
    if reason.startswith("does not verify"):  # its files were the problem, not the model
        return None, ""
    return key, reason


def _summarise(symbol: str, successes: list[Attempt], streak: _Streak) -> SymbolHistory:
    ordered = sorted(successes, key=lambda a: a.started_at)
    return SymbolHistory(
        symbol=symbol,
        seconds=ewma(a.seconds for a in ordered if a.seconds),
        peak_rss_mb=_largest(a.peak_rss_mb for a in ordered[-5:]),
        gpu_peak_mb=_largest(a.gpu_peak_mb for a in ordered[-5:]),
        samples=len(ordered),
        failed_nights=len(streak[0]),
        last_failure=streak[1],
        failed_at=streak[0],
    )


def ewma(values: Iterable[float], alpha: float = EWMA_ALPHA) -> float | None:
    mean: float | None = None
    for value in values:
        if not isinstance(value, int | float) or not value >= 0:
            continue  # an odd figure from an older ledger (text, NaN): not a duration
        mean = value if mean is None else alpha * value + (1 - alpha) * mean
    return mean


def _largest(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
