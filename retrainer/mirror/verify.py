"""`retrainer verify`: re-hash a run's artifacts against their sha256.txt; with `--remote`,
check the stored copies' checksums against it instead (HEAD / metadata, no re-upload)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import typer

from retrainer.base.artifacts import (
    MANIFEST_NAME,
    Layout,
    now_utc,
    parse_manifest,
    run_day,
    sha256_bytes,
    verify_manifest,
)
from retrainer.base.errors import BadInputError
from retrainer.ledger.entries import ItemState, LedgerEntry
from retrainer.ledger.journal import read_ledger
from retrainer.mirror.storage.base import StorageClient, UploadError


def verify_run(root: Path, day: str | None) -> bool:
    """Re-hash each successful symbol's artifacts against its sha256.txt."""
    return _check_each_success(
        root, day, lambda folder, _key, entry: verify_manifest(folder, entry.manifest_sha256),
        "")


def verify_remote(root: Path, day: str | None, storage: StorageClient) -> bool:
    """Check each successful symbol's stored objects against its local sha256.txt."""
    return _check_each_success(
        root, day, lambda folder, key, _entry: remote_problems(folder, key, storage),
        f" against {storage.describe()}")


def _check_each_success(root: Path, day: str | None,
                        problems_of: Callable[[Path, str, LedgerEntry], list[str]],
                        where: str) -> bool:
    """Print every problem of every symbol that succeeded that day; True if none.
    problems_of gets the artifact folder, its key (relative path) and the ledger entry."""
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
        problems = problems_of(root / entry.artifact_dir, entry.artifact_dir, entry)
        for problem in problems:
            typer.echo(f"{symbol}: {problem}")
        bad += bool(problems)
    typer.echo(f"{day}: {checked} symbols checked{where}, {bad} with problems")
    return bad == 0


def remote_problems(folder: Path, prefix: str, storage: StorageClient) -> list[str]:
    """Every artifact listed in the folder's sha256.txt, and the manifest itself, must be
    stored under the same relative key with the same sha256."""
    manifest = folder / MANIFEST_NAME
    try:
        raw = manifest.read_bytes()
        expected = parse_manifest(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [f"{manifest}: cannot be read ({exc})"]
    expected[MANIFEST_NAME] = sha256_bytes(raw)
    problems = []
    for name, digest in sorted(expected.items()):
        key = f"{prefix}/{name}"
        try:
            remote = storage.checksum(key)
        except UploadError as exc:
            problems.append(f"{storage.uri(key)}: {exc.reason}")
            continue
        if remote is None:
            # Absent, or put there by another writer that recorded no sha256.
            problems.append(f"{storage.uri(key)}: missing or without a recorded sha256")
        elif remote != digest:
            problems.append(f"{storage.uri(key)}: sha256 mismatch")
    return problems
