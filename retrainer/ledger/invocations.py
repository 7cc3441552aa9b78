"""Invocations the ledger does not record: runs/<day>/invocations/<run_id>.json.

A `retrainer run` that stops before its night starts (bad input, the lock held, an internal
or I/O error, a stop signal while it plans) never opens the day's ledger, and one whose
night could not record its own end leaves the ledger without it. Either leaves one small
JSON file here: who and when, `started` (whether its night had begun), the exit code, the
stage it reached and why it ended. Each is written once, atomically and under its own name,
so writing one takes no lock and never touches the ledger of a run that holds the lock.
`retrainer status` and `retrainer history` read them beside the ledger.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import Layout, atomic_write_json

INVOCATIONS_DIR = "invocations"


def invocation_path(layout: Layout, day: str, run_id: str) -> Path:
    return layout.run_dir(day) / INVOCATIONS_DIR / f"{run_id}.json"


def write_invocation(layout: Layout, day: str, record: Mapping[str, Any]) -> Path:
    path = invocation_path(layout, day, str(record["run_id"]))
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, dict(record))
    return path


def read_invocations(layout: Layout, day: str) -> list[dict[str, Any]]:
    """The day's records, oldest first; one that cannot be read is left out."""
    records = []
    for path in sorted((layout.run_dir(day) / INVOCATIONS_DIR).glob("*.json")):
        try:
            record = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and "run_id" in record and "started_at" in record:
            records.append(record)
    return sorted(records, key=lambda r: str(r["started_at"]))


def days_with_invocations(layout: Layout) -> set[str]:
    return {p.parent.parent.name for p in layout.root.glob(f"runs/*/{INVOCATIONS_DIR}/*.json")}
