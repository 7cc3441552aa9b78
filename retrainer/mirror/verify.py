"""`retrainer verify`: re-hash a run's artifacts against their sha256.txt; with `--remote`,
check the stored copies' checksums against it instead (HEAD / metadata, no re-upload)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from retrainer.base.artifacts import (
    FEATURES_FILE,
    MANIFEST_NAME,
    Layout,
    parse_manifest,
    sha256_bytes,
    verify_manifest,
)
from retrainer.base.clock import now_utc, run_day
from retrainer.base.errors import BadInputError
from retrainer.ledger.entries import ItemState, LedgerEntry
from retrainer.ledger.journal import read_ledger
from retrainer.mirror.storage.protocol import StorageClient, UploadError


@dataclass
class VerifyReport:
    day: str
    where: str  # "" for the local files, else " against <storage>"
    checked: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (item id, problem)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        bad = len({item_id for item_id, _ in self.problems})
        return [
            *(f"{item_id}: {problem}" for item_id, problem in self.problems),
            f"{self.day}: {self.checked} symbols checked{self.where}, {bad} with problems",
        ]


def verify_run(root: Path, day: str | None) -> VerifyReport:
    """Re-hash each successful symbol's artifacts against its sha256.txt."""
    return _check_each_success(
        root, day, lambda folder, _key, entry: verify_manifest(folder, entry.manifest_sha256), ""
    )


def verify_remote(
    root: Path, day: str | None, storage: StorageClient, upload_features: bool = True
) -> VerifyReport:
    """Check each successful symbol's stored objects against its local sha256.txt."""
    return _check_each_success(
        root,
        day,
        lambda folder, key, _entry: remote_problems(folder, key, storage, upload_features),
        f" against {storage.describe()}",
    )


def _check_each_success(
    root: Path,
    day: str | None,
    problems_of: Callable[[Path, str, LedgerEntry], list[str]],
    where: str,
) -> VerifyReport:
    """Every problem of every symbol that succeeded that day. problems_of gets the
    artifact folder, its key (relative path) and the ledger entry."""
    layout = Layout(root)
    day = day or run_day(now_utc())
    if not layout.status_path(day).exists() and not layout.journal_path(day).exists():
        raise BadInputError(f"no run ledger for {day} under {root}/runs")
    entries = read_ledger(layout.status_path(day), layout.journal_path(day)).entries
    report = VerifyReport(day, where)
    for item_id, entry in sorted(entries.items()):
        if entry.state is not ItemState.SUCCESS or entry.artifact_dir is None:
            continue
        report.checked += 1
        problems = problems_of(root / entry.artifact_dir, entry.artifact_dir, entry)
        report.problems.extend((item_id, problem) for problem in problems)
    return report


def remote_problems(
    folder: Path, prefix: str, storage: StorageClient, upload_features: bool = True
) -> list[str]:
    """Every artifact listed in the folder's sha256.txt, and the manifest itself, must be
    stored under the same relative key with the same sha256."""
    manifest = folder / MANIFEST_NAME
    try:
        raw = manifest.read_bytes()
        expected = parse_manifest(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return [f"{manifest}: cannot be read ({exc})"]
    expected[MANIFEST_NAME] = sha256_bytes(raw)
    if not upload_features:  # kept on this machine only: [storage] upload_features
        expected.pop(FEATURES_FILE, None)
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
