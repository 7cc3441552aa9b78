"""Settling what a scheduler that died (SIGKILL, power loss, OOM) left `running`.

Nobody is watching those attempts any more, so each one is settled from what is on disk:
an attempt whose folder holds a manifest that verifies and its metrics had finished (the
scheduler died between writing its manifest and recording it): it is recorded `success`
and not trained again. Any other is `interrupted` and runs again. A folder without a
verifying manifest is never mistaken for a finished attempt.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import MANIFEST_NAME, Layout, sha256_bytes, verify_manifest
from retrainer.base.clock import iso, now_utc
from retrainer.ledger.entries import ItemState, LedgerEntry


def needs_settling(entry: LedgerEntry | None) -> bool:
    return entry is not None and entry.state is ItemState.RUNNING


def settle(entry: LedgerEntry, layout: Layout) -> LedgerEntry:
    """The entry as it really ended; unchanged unless it was left running."""
    attempt = entry.last_attempt
    if not needs_settling(entry) or attempt is None:
        return entry
    dead = f"the scheduler of run {entry.run_id} died while it ran"
    folder = layout.root / attempt.artifact_dir if attempt.artifact_dir else None
    metrics = _finished_metrics(folder) if folder else None
    if folder is None or metrics is None:
        stopped = replace(
            attempt, state=ItemState.INTERRUPTED, ended_at=iso(now_utc()), reason=dead
        )
        return entry.with_attempt(stopped, updated_at=stopped.ended_at)
    manifest = folder / MANIFEST_NAME
    ended_at = iso(datetime.fromtimestamp(manifest.stat().st_mtime, UTC))
    done = replace(
        attempt,
        state=ItemState.SUCCESS,
        ended_at=ended_at,
        reason=f"finished; recorded after {dead}",
    )
    return entry.with_attempt(
        done,
        updated_at=ended_at,
        artifact_dir=attempt.artifact_dir,
        manifest_sha256=sha256_bytes(manifest.read_bytes()),
        metrics=metrics,
    )


def _finished_metrics(folder: Path) -> dict[str, Any] | None:
    """The attempt's metrics if its manifest verifies; None if it did not finish."""
    if verify_manifest(folder):
        return None
    try:
        metrics = json.loads((folder / "metrics.json").read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None
