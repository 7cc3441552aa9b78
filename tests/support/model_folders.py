"""A root's models built by hand, as nights leave them: attempt folders, pointers, ledgers.

The folders are what the tiny loadable trainer writes (tests.support.loadable_plugins),
hashed into a real sha256.txt, so that a test can list, load, verify and prune them.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from retrainer.base.artifacts import MANIFEST_NAME, Layout, sha256_file, write_manifest
from retrainer.base.clock import attempt_stamp, iso, run_day
from retrainer.ledger.entries import Attempt, ItemState, LedgerEntry
from retrainer.ledger.journal import Ledger
from retrainer.registry.champion import Champion, write_champion

LOADABLE = "tests.support.loadable_plugins:train"


def make_attempt(
    layout: Layout, symbol: str, made: datetime, *, success: bool = True, log_loss: float = 0.6
) -> Path:
    """An attempt folder named by its start: whole (success) or partial outputs only."""
    folder = layout.model_dir(symbol) / attempt_stamp(made)
    folder.mkdir(parents=True)
    (folder / "features.parquet").write_bytes(b"partial features " * 64)
    if success:
        (folder / "model.bin").write_text(json.dumps({"symbol": symbol, "p_up": 0.55}))
        (folder / "config.json").write_text(json.dumps({"symbol": symbol}))
        metrics = {"test_log_loss": log_loss, "net_sharpe": 1.25, "p_up": 0.55}
        (folder / "metrics.json").write_text(json.dumps(metrics))
        write_manifest(folder, durable=False)
    return folder


def promote(
    layout: Layout, folder: Path, promoted_at: datetime, *, trainer: str = LOADABLE
) -> Champion:
    """Point the symbol's CHAMPION at folder, as the promotion would."""
    metrics = json.loads((folder / "metrics.json").read_text())
    champion = Champion(
        symbol=folder.parent.name,
        artifact_dir=layout.relative(folder),
        manifest_sha256=sha256_file(folder / MANIFEST_NAME),
        promoted_at=iso(promoted_at),
        run_id=f"{attempt_stamp(promoted_at)}-1",
        decision="promoted",
        reason="test_log_loss better by 0.05",
        trainer=trainer,
        metrics=metrics,
    )
    write_champion(layout, champion)
    return champion


def record_day(layout: Layout, day: datetime, folders: list[Path]) -> str:
    """The day's ledger: each symbol's folders as its attempts, the last one its success."""
    name = run_day(day)
    by_symbol: dict[str, list[str]] = {}
    for folder in folders:
        by_symbol.setdefault(folder.parent.name, []).append(layout.relative(folder))
    ledger = Ledger(layout.status_path(name), layout.journal_path(name))
    for symbol, relatives in by_symbol.items():
        attempts = tuple(
            Attempt(n, ItemState.SUCCESS, iso(day), relative, "cpu", 1)
            for n, relative in enumerate(relatives, start=1)
        )
        entry = LedgerEntry(
            symbol, ItemState.SUCCESS, iso(day), attempts=attempts, artifact_dir=relatives[-1]
        )
        ledger.record(entry)
    ledger.close()
    return name
