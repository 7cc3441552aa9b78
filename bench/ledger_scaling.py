"""The cost of one ledger update with few symbols recorded vs many.

An update is what the runner does per transition: `record` (one journal line, fsynced)
then `maybe_flush` (the status.json snapshot, spaced out). Timed over a burst of updates,
so the snapshot rewrites the burst triggers are in the per-update figure.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from retrainer.base.clock import iso, now_utc
from retrainer.ledger.entries import Attempt, ItemState, LedgerEntry
from retrainer.ledger.journal import Ledger


def _entry(symbol: str, state: ItemState = ItemState.SUCCESS) -> LedgerEntry:
    stamp = iso(now_utc())
    attempt = Attempt(
        number=1,
        state=state,
        started_at=stamp,
        artifact_dir=f"models/{symbol}/x",
        device="cpu",
        threads=1,
        pid=1,
        ended_at=stamp,
        seconds=1.0,
        reason="ok",
        exit_code=0,
    )
    return LedgerEntry(
        symbol=symbol,
        state=state,
        updated_at=stamp,
        why="not trained today",
        attempts=(attempt,),
        artifact_dir=attempt.artifact_dir,
        manifest_sha256="0" * 64,
        train_minutes=0.02,
        metrics={"net_sharpe": 1.0, "accuracy": 0.51},
    )


def _seed_ledger(folder: Path, n_symbols: int) -> tuple[Path, Path]:
    """A day's ledger holding n_symbols entries: a snapshot as an earlier run leaves it."""
    status, journal = folder / "status.json", folder / "ledger.jsonl"
    symbols = {f"S{i:05d}": _entry(f"S{i:05d}").to_dict() for i in range(n_symbols)}
    status.write_text(json.dumps({"schema": 1, "journal_seq": 0, "runs": [], "symbols": symbols}))
    return status, journal


def time_updates(n_symbols: int, updates: int) -> float:
    """Seconds per update, averaged over a burst of `updates` on a ledger of n_symbols."""
    with tempfile.TemporaryDirectory(prefix="bench-ledger-") as tmp:
        status, journal = _seed_ledger(Path(tmp), n_symbols)
        ledger = Ledger(status, journal)
        entry = _entry("S00000", ItemState.RUNNING)
        began = time.perf_counter()
        for i in range(updates):
            ledger.record(replace(entry, updated_at=str(i)))
            ledger.maybe_flush()
        elapsed = time.perf_counter() - began
        ledger.close()
    return elapsed / updates
