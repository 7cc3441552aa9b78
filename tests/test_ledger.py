"""The ledger: crash-safe, valid JSON at every instant, O(1) per update."""

from __future__ import annotations

import json
import os
from pathlib import Path

from retrainer.ledger.entries import Attempt, ItemState, LedgerEntry
from retrainer.ledger.journal import Ledger, read_ledger


def entry(symbol: str, state: ItemState = ItemState.SUCCESS, attempts: int = 1) -> LedgerEntry:
    tries = tuple(
        Attempt(
            number=n,
            state=state,
            started_at="2026-11-23T02:00:00Z",
            artifact_dir=f"models/{symbol}/x{n}",
            device="cpu",
            threads=1,
        )
        for n in range(1, attempts + 1)
    )
    return LedgerEntry(
        symbol=symbol,
        state=state,
        updated_at="2026-11-23T02:00:00Z",
        attempts=tries,
        metrics={"net_sharpe": 1.5},
    )


def paths(tmp_path: Path) -> tuple[Path, Path]:
    return tmp_path / "status.json", tmp_path / "ledger.jsonl"


def test_entries_round_trip_through_their_dicts() -> None:
    original = entry("BTCUSDT", ItemState.TIMEOUT, attempts=3)
    assert LedgerEntry.from_dict(json.loads(json.dumps(original.to_dict()))) == original


def test_every_recorded_transition_survives_a_reopen(tmp_path: Path) -> None:
    ledger = Ledger(*paths(tmp_path))
    for n in range(5):
        ledger.record(entry(f"S{n}"))
    ledger.record(entry("S0", ItemState.FAILED, attempts=2))
    # No flush and no close: as if the scheduler were killed here.
    state = read_ledger(*paths(tmp_path))
    assert sorted(state.entries) == [f"S{n}" for n in range(5)]
    assert state.entries["S0"].state is ItemState.FAILED
    assert len(state.entries["S0"].attempts) == 2


def test_status_json_is_a_complete_snapshot_after_a_flush(tmp_path: Path) -> None:
    status, journal = paths(tmp_path)
    ledger = Ledger(status, journal)
    ledger.record(entry("ETHUSDT"))
    ledger.flush()
    snapshot = json.loads(status.read_text())
    assert snapshot["symbols"]["ETHUSDT"]["state"] == "success"
    assert snapshot["journal_seq"] == 1


def test_a_torn_last_journal_line_is_ignored(tmp_path: Path) -> None:
    status, journal = paths(tmp_path)
    ledger = Ledger(status, journal)
    ledger.record(entry("A"))
    ledger.record(entry("B"))
    with journal.open("ab") as handle:  # a kill in the middle of an append
        handle.write(b'{"seq": 3, "entry": {"symbol": "C", "sta')
    state = read_ledger(status, journal)
    assert sorted(state.entries) == ["A", "B"]
    reopened = Ledger(status, journal)  # compaction folds it away; appends stay valid
    reopened.record(entry("D"))
    assert sorted(read_ledger(status, journal).entries) == ["A", "B", "D"]


def test_an_unreadable_snapshot_falls_back_to_the_journal(tmp_path: Path) -> None:
    status, journal = paths(tmp_path)
    ledger = Ledger(status, journal)
    ledger.record(entry("A"))
    status.write_text("{not json")
    assert sorted(read_ledger(status, journal).entries) == ["A"]


def test_reopening_compacts_the_journal_into_the_snapshot(tmp_path: Path) -> None:
    status, journal = paths(tmp_path)
    ledger = Ledger(status, journal)
    for n in range(20):
        ledger.record(entry(f"S{n}"))
    Ledger(status, journal)
    assert not journal.exists() or journal.stat().st_size == 0
    assert len(json.loads(status.read_text())["symbols"]) == 20


def test_an_update_costs_the_same_bytes_with_10_or_10000_symbols(tmp_path: Path) -> None:
    def bytes_per_update(count: int) -> int:
        status, journal = paths(tmp_path / str(count))
        ledger = Ledger(status, journal, flush_interval_s=3600)
        for n in range(count):
            ledger.record(entry(f"S{n:05d}"))
        ledger.flush()
        snapshot_mtime = os.stat(status).st_mtime_ns
        size = journal.stat().st_size
        ledger.record(entry("S00001", ItemState.FAILED))
        ledger.maybe_flush()
        assert os.stat(status).st_mtime_ns == snapshot_mtime  # no O(N) rewrite per update
        return journal.stat().st_size - size

    # The same one line either way, but for the digits of its sequence number.
    assert bytes_per_update(10_000) - bytes_per_update(10) == len("10001") - len("11")
