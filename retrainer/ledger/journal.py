"""The run ledger: runs/<day>/status.json, backed by an append-only journal.

Each transition appends one line (the symbol's whole entry) to ledger.jsonl and fsyncs it
(an attempt's start excepted: losing it in a power cut only makes the symbol run again;
during a run the fsync is queued to the syncer's thread, syncer.py):
O(1) whatever the number of symbols already recorded. status.json is a snapshot of every
entry, rewritten atomically (so it is valid JSON at every instant) at most once per
`flush_interval_s` during a run and always at the start and the end; readers replay the
journal lines newer than the snapshot, so nothing is lost between snapshots, even after a
SIGKILL. A torn last journal line (a kill mid-write) is ignored and cut off.

Each entry is turned into JSON once, when it changes, and kept: a snapshot joins those
texts (one symbol per line) instead of re-serialising every entry, so its cost grows with
the bytes written, not with Python work per symbol (bench/ledger_scaling.py).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import atomic_write_text
from retrainer.base.clock import iso, now_utc
from retrainer.ledger.entries import LedgerEntry
from retrainer.ledger.fsync import Syncer

SCHEMA_VERSION = 1


@dataclass
class LedgerState:
    """What a ledger holds once loaded: entries, run records, the last journal seq."""

    entries: dict[str, LedgerEntry] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    seq: int = 0

    def apply(self, record: Mapping[str, Any]) -> None:
        self.seq = max(self.seq, int(record.get("seq", 0)))
        if "entry" in record:
            entry = LedgerEntry.from_dict(record["entry"])
            self.entries[entry.item_id] = entry
        if "run" in record:
            run = dict(record["run"])
            self.runs[str(run["run_id"])] = run


def read_ledger(status_path: Path, journal_path: Path) -> LedgerState:
    """Load the snapshot, then replay the journal lines it does not cover yet."""
    state = LedgerState()
    snapshot = _read_snapshot(status_path)
    if snapshot is not None:
        for raw in snapshot.get("symbols", {}).values():
            state.apply({"entry": raw})
        for raw in snapshot.get("runs", []):
            state.apply({"run": raw})
        state.seq = int(snapshot.get("journal_seq", 0))
    covered = state.seq
    for record in _journal_records(journal_path):
        if int(record.get("seq", 0)) > covered:
            state.apply(record)
    return state


def _read_snapshot(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # unreadable snapshot: the journal still holds every transition
    return loaded if isinstance(loaded, dict) else None


def _journal_records(path: Path) -> Iterator[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a torn line from a kill mid-append
        if isinstance(record, dict):
            yield record


def _entry_json(raw: Mapping[str, Any]) -> str:
    return json.dumps(raw, separators=(",", ":"), allow_nan=False)


class Ledger:
    """The writable ledger of one day. Thread-safe: uploads record from their own thread."""

    def __init__(
        self,
        status_path: Path,
        journal_path: Path,
        flush_interval_s: float = 1.0,
        syncer: Syncer | None = None,
    ):
        """With a syncer, a durable line's fsync runs in its thread (syncer.py)."""
        self.status_path = status_path
        self.journal_path = journal_path
        self.flush_interval_s = flush_interval_s
        self._lock = threading.Lock()
        self._syncer = syncer
        self._state = read_ledger(status_path, journal_path)
        self._texts = {sym: _entry_json(e.to_dict()) for sym, e in self._state.entries.items()}
        self._dirty = True
        self._last_flush = 0.0
        self._last_flush_cost = 0.0
        status_path.parent.mkdir(parents=True, exist_ok=True)
        self._compact()
        self._fd = os.open(journal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    # -- reading ---------------------------------------------------------------
    @property
    def entries(self) -> Mapping[str, LedgerEntry]:
        with self._lock:
            return dict(self._state.entries)

    def get(self, item_id: str) -> LedgerEntry | None:
        with self._lock:
            return self._state.entries.get(item_id)

    # -- writing ---------------------------------------------------------------
    def record(self, entry: LedgerEntry, durable: bool = True) -> None:
        """Append one transition; the snapshot follows within flush_interval_s.

        durable=False skips the fsync, for a transition whose loss in a power cut is
        harmless (an attempt started: without it the symbol simply runs again). A process
        crash loses nothing either way, and the next durable line's fsync covers it."""
        self.record_many([entry], durable)

    def record_many(self, entries: Sequence[LedgerEntry], durable: bool = True) -> None:
        """Several transitions in one write and one fsync (a run queueing its symbols)."""
        texts = [(entry, _entry_json(entry.to_dict())) for entry in entries]
        if not texts:
            return
        with self._lock:
            first = self._state.seq + 1
            self._write_line(
                "".join(
                    f'{{"seq":{first + i},"entry":{text}}}\n' for i, (_, text) in enumerate(texts)
                ),
                durable,
            )
            self._state.seq = first + len(texts) - 1
            for entry, text in texts:
                self._state.entries[entry.item_id] = entry
                self._texts[entry.item_id] = text

    def record_run(self, run: Mapping[str, Any]) -> None:
        with self._lock:
            record = {"seq": self._state.seq + 1, "run": dict(run)}
            self._write_line(json.dumps(record, separators=(",", ":"), allow_nan=False) + "\n")
            self._state.apply(record)

    def _write_line(self, line: str, durable: bool = True) -> None:
        os.write(self._fd, line.encode("utf-8"))
        if durable and self._syncer is not None:
            self._syncer.sync(self._fd)
        elif durable:
            os.fsync(self._fd)
        self._dirty = True

    def maybe_flush(self) -> None:
        """Rewrite status.json if it is stale; spaced so that it costs little at 10k symbols."""
        interval = max(self.flush_interval_s, 20 * self._last_flush_cost)
        if self._dirty and time.monotonic() - self._last_flush >= interval:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            started = time.monotonic()
            atomic_write_text(self.status_path, self._snapshot_text())
            self._dirty = False
            self._last_flush = time.monotonic()
            self._last_flush_cost = self._last_flush - started

    def close(self) -> None:
        """Flush and close; closing again does nothing."""
        if self._fd < 0:
            return
        self.flush()
        if self._syncer is not None:
            self._syncer.drain()  # before the descriptor it fsyncs is closed
        os.close(self._fd)
        self._fd = -1

    def _snapshot_text(self) -> str:
        head = {
            "schema": SCHEMA_VERSION,
            "updated_at": iso(now_utc()),
            "journal_seq": self._state.seq,
            "runs": list(self._state.runs.values()),
        }
        head_text = json.dumps(head, indent=1, allow_nan=False)[:-2]  # without "\n}"
        symbols = ",\n".join(f"  {json.dumps(s)}: {t}" for s, t in sorted(self._texts.items()))
        body = f"{{\n{symbols}\n }}" if symbols else "{}"
        return f'{head_text},\n "symbols": {body}\n}}\n'

    def _compact(self) -> None:
        """Fold the journal into a fresh snapshot, then start an empty journal.

        The snapshot records the last seq first, so a crash between the two steps only
        leaves journal lines that the next reader skips as already covered.
        """
        atomic_write_text(self.status_path, self._snapshot_text())
        if self.journal_path.exists():
            self.journal_path.unlink()
        self._last_flush = time.monotonic()
        self._dirty = False
