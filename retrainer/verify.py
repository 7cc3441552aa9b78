"""`retrainer verify`: re-hash a run's artifacts against their sha256.txt."""

from __future__ import annotations

from pathlib import Path

import typer

from retrainer.artifacts import Layout, now_utc, run_day, verify_manifest
from retrainer.errors import BadInputError
from retrainer.scheduler.items import ItemState
from retrainer.scheduler.ledger import read_ledger


def verify_run(root: Path, day: str | None) -> bool:
    layout = Layout(root)
    day = day or run_day(now_utc())
    if not layout.status_path(day).exists() and not layout.journal_path(day).exists():
        raise BadInputError(f"no run ledger for {day} under {root}/runs")
    entries = read_ledger(layout.status_path(day), layout.journal_path(day)).entries
    checked = bad = 0
    for symbol, entry in sorted(entries.items()):
        if entry.state is not ItemState.SUCCESS or entry.artifact_dir is None:
            continue
        checked += 1
        problems = verify_manifest(root / entry.artifact_dir, entry.manifest_sha256)
        for problem in problems:
            typer.echo(f"{symbol}: {problem}")
        bad += bool(problems)
    typer.echo(f"{day}: {checked} symbols checked, {bad} with problems")
    return bad == 0
