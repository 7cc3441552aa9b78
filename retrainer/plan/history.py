"""What past nights measured, read from their ledgers: how long each symbol takes, how much
memory it needs, and how many nights in a row it has failed.

The plan orders, admits and forecasts by this. A ledger that is missing, torn or from an
older version is skipped with a note, never a crash: history only makes a night smarter,
it is never needed for a night to run.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from retrainer.base.artifacts import Layout
from retrainer.ledger.entries import FAILED_STATES, Attempt, ItemState, LedgerEntry
from retrainer.ledger.journal import read_ledger

DAY_FOLDER = re.compile(r"^\d{8}Z$")
# Recent nights weigh more: a symbol that grew last week is planned at its new size.
EWMA_ALPHA = 0.3
DAYS_READ = 14


@dataclass(frozen=True)
class SymbolHistory:
    symbol: str
    seconds: float | None = None  # EWMA of its successful attempts' durations
    peak_rss_mb: float | None = None  # the largest peak RSS of its recent successes
    gpu_peak_mb: float | None = None  # the largest GPU peak of its recent successes
    samples: int = 0  # successful attempts behind those figures
    failed_nights: int = 0  # the latest nights in a row that ended with it failed
    last_failure: str = ""  # the reason of the latest of those


@dataclass(frozen=True)
class History:
    symbols: Mapping[str, SymbolHistory] = field(default_factory=dict)
    days: tuple[str, ...] = ()  # the ledgers read, oldest first
    notes: tuple[str, ...] = ()  # the ledgers skipped, and why

    def of(self, symbol: str) -> SymbolHistory:
        return self.symbols.get(symbol) or SymbolHistory(symbol)


def read_history(layout: Layout, today: str, days: int = DAYS_READ) -> History:
    """The last `days` ledgers up to today's (today's own attempts count for durations and
    memory; only finished nights count for failure streaks)."""
    found, notes = _ledgers(layout, today, days)
    per_symbol: dict[str, list[Attempt]] = {}
    streaks: dict[str, tuple[int, str]] = {}
    for day, entries in found:
        for symbol, entry in entries.items():
            per_symbol.setdefault(symbol, []).extend(
                a for a in entry.attempts if a.state is ItemState.SUCCESS and a.seconds
            )
            if day != today:
                streaks[symbol] = _streak(streaks.get(symbol, (0, "")), entry)
    symbols = {
        symbol: _summarise(symbol, per_symbol.get(symbol, []), streaks.get(symbol, (0, "")))
        for symbol in set(per_symbol) | set(streaks)
    }
    return History(symbols, tuple(day for day, _ in found), tuple(notes))


def _ledgers(
    layout: Layout, today: str, days: int
) -> tuple[list[tuple[str, dict[str, LedgerEntry]]], list[str]]:
    runs = layout.root / "runs"
    try:
        names = sorted(p.name for p in runs.iterdir() if DAY_FOLDER.match(p.name))
    except OSError:
        return [], []
    chosen = [name for name in names if name <= today][-days:]
    found, notes = [], []
    for day in chosen:
        try:
            state = read_ledger(layout.status_path(day), layout.journal_path(day))
        except Exception as exc:  # an old or damaged ledger: history is a hint, not a need
            notes.append(f"history: the ledger of {day} was skipped ({type(exc).__name__}: {exc})")
            continue
        found.append((day, state.entries))
    return found, notes


def _streak(previous: tuple[int, str], entry: LedgerEntry) -> tuple[int, str]:
    """A night that ended with the symbol failed adds one; a success resets; a night that
    skipped it (done, fresh, quarantined) leaves the streak as it was."""
    if entry.state in FAILED_STATES:
        last = entry.last_attempt
        return previous[0] + 1, (last.reason if last and last.reason else entry.why) or ""
    if entry.state is ItemState.SUCCESS:
        return 0, ""
    return previous


def _summarise(symbol: str, successes: list[Attempt], streak: tuple[int, str]) -> SymbolHistory:
    ordered = sorted(successes, key=lambda a: a.started_at)
    return SymbolHistory(
        symbol=symbol,
        seconds=ewma(a.seconds for a in ordered if a.seconds),
        peak_rss_mb=_largest(a.peak_rss_mb for a in ordered[-5:]),
        gpu_peak_mb=_largest(a.gpu_peak_mb for a in ordered[-5:]),
        samples=len(ordered),
        failed_nights=streak[0],
        last_failure=streak[1],
    )


def ewma(values: Iterable[float], alpha: float = EWMA_ALPHA) -> float | None:
    mean: float | None = None
    for value in values:
        mean = value if mean is None else alpha * value + (1 - alpha) * mean
    return mean


def _largest(values: Iterable[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None
