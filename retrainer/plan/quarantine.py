"""Quarantine: a symbol that failed `quarantine_after_nights` nights in a row is skipped
until `--force` trains it anyway or `retrainer unquarantine SYMBOL` releases it.

The failed nights come from past ledgers (history.py); releases live in
`<root>/quarantine.json` (symbol -> released_at, by), written atomically under the run lock.
A release counts the failed nights only after it: the symbol trains on the next night, and
is quarantined again only after as many new failed nights in a row.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from retrainer.base.artifacts import Layout, atomic_write_json
from retrainer.base.clock import iso, run_day
from retrainer.base.errors import BadInputError
from retrainer.base.lock import RunLock
from retrainer.plan.history import DAYS_READ, History, SymbolHistory, read_history

RELEASES_VERSION = 1


@dataclass(frozen=True)
class Release:
    symbol: str
    released_at: str  # ISO, UTC
    by: str  # user@host

    def to_dict(self) -> dict[str, str]:
        return {"released_at": self.released_at, "by": self.by}


@dataclass(frozen=True)
class Quarantine:
    """Why a symbol is skipped: the failed nights that count (after any release)."""

    failed_nights: int
    last_failure: str
    failed_at: tuple[str, ...]  # when each of those nights ended, oldest first
    released_at: str | None = None  # the latest release, if any (older failed nights not counted)

    def why(self, symbol: str) -> str:
        last = " ".join(self.last_failure.split())[:200] or "no reason recorded"
        return (
            f"quarantined: failed {self.failed_nights} nights in a row (last: {last}); "
            f"`retrainer unquarantine {symbol}` or --force"
        )


def history_days(after_nights: int | None) -> int:
    """The ledgers a plan reads: enough for the longest streak that quarantines."""
    return max(DAYS_READ, after_nights or 0)


def read_releases(layout: Layout) -> tuple[dict[str, Release], str | None]:
    """The releases, and a note when the file cannot be read (then none is counted)."""
    path = layout.quarantine_path()
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return {}, None
    except (OSError, ValueError) as exc:
        return {}, f"quarantine: {path} was ignored ({type(exc).__name__}: {exc})"
    symbols = raw.get("symbols") if isinstance(raw, dict) else None
    if not isinstance(symbols, dict):
        return {}, f"quarantine: {path} was ignored (no `symbols` table)"
    releases = {}
    for symbol, release in symbols.items():
        if isinstance(release, dict) and isinstance(release.get("released_at"), str):
            releases[symbol] = Release(symbol, release["released_at"], str(release.get("by", "")))
    return releases, None


def quarantine_of(
    history: SymbolHistory, release: Release | None, after_nights: int | None
) -> Quarantine | None:
    """The symbol's quarantine, or None when it may train: fewer failed nights in a row
    than `after_nights` since its last release (None: never quarantined)."""
    if after_nights is None or history.failed_nights < after_nights:
        return None
    counted = history.failed_at
    if release is not None:
        counted = tuple(at for at in counted if at > release.released_at)
    if len(counted) < after_nights:
        return None
    return Quarantine(
        len(counted), history.last_failure, counted, release.released_at if release else None
    )


def release_note(
    history: SymbolHistory, release: Release | None, after_nights: int | None
) -> str | None:
    """When only a release lets the symbol train: when and by whom (for the plan's why)."""
    if release is None or after_nights is None or history.failed_nights < after_nights:
        return None
    if quarantine_of(history, release, after_nights) is not None:
        return None
    return f"released from quarantine at {release.released_at} by {release.by}"


def quarantined_symbols(
    history: History, releases: Mapping[str, Release], after_nights: int | None
) -> dict[str, Quarantine]:
    """Every symbol the history names that is quarantined now."""
    found = {}
    for symbol, past in history.symbols.items():
        quarantine = quarantine_of(past, releases.get(symbol), after_nights)
        if quarantine is not None:
            found[symbol] = quarantine
    return found


@dataclass(frozen=True)
class Unquarantined:
    symbol: str
    released: bool  # False: it was not quarantined, nothing was written
    message: str


def unquarantine(
    layout: Layout, symbol: str, after_nights: int | None, now: datetime
) -> Unquarantined:
    """Release a quarantined symbol (under the run lock, so not while a night plans).
    A symbol no ledger of the days read names is bad input; one not quarantined is left
    as it is, and said so."""
    with RunLock(layout.lock_path(), f"unquarantine-{os.getpid()}"):
        history = read_history(layout, run_day(now), history_days(after_nights))
        releases, note = read_releases(layout)
        if symbol not in history.symbols:
            raise BadInputError(
                f"unquarantine: {symbol} is not in the ledgers of the last "
                f"{len(history.days)} night(s) under {layout.root}: nothing to release"
            )
        past = history.of(symbol)
        quarantine = quarantine_of(past, releases.get(symbol), after_nights)
        if quarantine is None:
            limit = "never" if after_nights is None else f"after {after_nights}"
            return Unquarantined(
                symbol,
                False,
                f"{symbol} is not quarantined (failed nights in a row that count: "
                f"{_counted(past, releases.get(symbol))}; quarantined {limit}); nothing changed",
            )
        release = Release(symbol, iso(now), _who())
        _write_releases(layout, {**releases, symbol: release})
        told = f"; note: {note}" if note else ""
        return Unquarantined(
            symbol,
            True,
            f"released {symbol} from quarantine (it had failed {quarantine.failed_nights} "
            f"nights in a row); the next night trains it{told}",
        )


def _counted(past: SymbolHistory, release: Release | None) -> int:
    if release is None:
        return past.failed_nights
    return sum(1 for at in past.failed_at if at > release.released_at)


def _write_releases(layout: Layout, releases: Mapping[str, Release]) -> None:
    body: dict[str, Any] = {
        "version": RELEASES_VERSION,
        "symbols": {s: r.to_dict() for s, r in sorted(releases.items())},
    }
    atomic_write_json(layout.quarantine_path(), body)


def _who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"
