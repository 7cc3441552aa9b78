"""`retrainer prune --keep-days N`: remove old attempt folders, locally and remotely.

An attempt folder (models/<SYMBOL>/<stamp>/) goes when it began more than N days ago (its
name's stamp, else its mtime), unless
- it is the symbol's champion (what CHAMPION names now; the champion it replaced is not
  kept for itself: a rollback target stays only while it is recent or a ledger names it),
- a kept day's ledger names it (an entry's folder or any attempt's): the runs of the last
  N days, and of any day whose uploads still wait for `retrainer sync`,
- or its symbol's CHAMPION cannot be read: nothing of that symbol is removed.

Prune takes the run lock, as a night does, so the two never overlap (a night cannot start
meanwhile, and a prune while a night runs exits 3); a dry run reads only and takes none.
A folder is first renamed to a hidden name, then removed: a crash midway leaves a hidden
folder, which no reader takes for an attempt and the next prune finishes.

Remotely (remote=True), the storage is listed under models/<SYMBOL>/ for each symbol this
root holds and the objects of every folder that the same rules let go are deleted (a
folder's time from its name only), including folders already gone locally. Symbols the
root does not hold are left alone: a fresh root with no pointers never empties a store.

Only attempt folders are pruned: runs/<day> (the ledgers, the history `retrainer history`
reads) and logs/<day> stay.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from retrainer.base.artifacts import Layout
from retrainer.base.clock import attempt_stamp, iso, run_day
from retrainer.base.errors import BadInputError
from retrainer.base.lock import RunLock
from retrainer.ledger.journal import read_ledger
from retrainer.mirror.storage.protocol import StorageClient, UploadError
from retrainer.mirror.sync import days_marked_pending
from retrainer.registry.champion import ChampionError, read_champion, symbols_with_models
from retrainer.registry.models import attempt_folders, attempt_time, folder_bytes, stamp_time

CHAMPION = "champion"
TOO_RECENT = "too recent"
PRUNING_PREFIX = ".pruning-"


@dataclass(frozen=True)
class Removed:
    folder: str  # relative to the root
    made_at: str
    bytes: int


@dataclass(frozen=True)
class Kept:
    folder: str
    made_at: str
    why: str  # champion | too recent | named by the ledger of <day>


@dataclass(frozen=True)
class RemoteRemoved:
    folder: str
    objects: int


@dataclass(frozen=True)
class Failure:
    folder: str  # or the symbol, when its pointer cannot be read
    where: str  # local | remote
    reason: str


@dataclass
class PruneReport:
    keep_days: int
    cutoff: str  # attempts that began before this go
    dry_run: bool
    remote: str | None = None  # the storage pruned, when remote
    removed: list[Removed] = field(default_factory=list)
    kept: list[Kept] = field(default_factory=list)
    remote_removed: list[RemoteRemoved] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes for r in self.removed)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok, "bytes_freed": self.bytes_freed}

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"{verb} {r.folder} ({_mb(r.bytes)})" for r in self.removed]
        protected = [k for k in self.kept if k.why != TOO_RECENT]
        lines += [f"kept {k.folder} ({k.why})" for k in protected]
        if self.remote is not None:
            lines += [
                f"{verb} remotely {r.folder} ({r.objects} object(s))" for r in self.remote_removed
            ]
        lines += [f"failed ({f.where}): {f.folder}: {f.reason}" for f in self.failures]
        recent = len(self.kept) - len(protected)
        summary = (
            f"{verb} {len(self.removed)} folder(s), {_mb(self.bytes_freed)}; kept "
            f"{len(protected)} protected and {recent} made since {self.cutoff} "
            f"(--keep-days {self.keep_days})"
        )
        if self.remote is not None:
            objects = sum(r.objects for r in self.remote_removed)
            summary += f"; {verb} {objects} object(s) of {len(self.remote_removed)} folder(s) "
            summary += f"from {self.remote}"
        if self.failures:
            summary += f"; {len(self.failures)} failure(s)"
        return [*lines, summary]


def prune(
    layout: Layout,
    keep_days: int,
    *,
    now: datetime,
    storage: StorageClient | None = None,
    remote: bool = False,
    dry_run: bool = False,
) -> PruneReport:
    """Remove the attempt folders older than keep_days that nothing keeps (module doc)."""
    if keep_days < 1:
        raise BadInputError(f"--keep-days must be at least 1, got {keep_days}")
    if remote and storage is None:
        raise BadInputError('--remote needs a storage ([storage] kind = "none")')
    if not layout.root.is_dir():
        raise BadInputError(f"{layout.root}: no such folder")
    store = storage if remote else None
    cutoff = now - timedelta(days=keep_days)
    report = PruneReport(keep_days, iso(cutoff), dry_run, store.describe() if store else None)
    if dry_run:
        _prune(layout, cutoff, report, store)
        return report
    with RunLock(layout.lock_path(), f"prune-{attempt_stamp(now)}-{os.getpid()}"):
        _prune(layout, cutoff, report, store)
    return report


def _prune(
    layout: Layout, cutoff: datetime, report: PruneReport, storage: StorageClient | None
) -> None:
    named = ledger_named(layout, kept_days(layout, cutoff))
    for symbol in symbols_with_models(layout):
        try:
            champion = read_champion(layout, symbol)
        except ChampionError as exc:
            report.failures.append(Failure(symbol, "local", f"{exc}: nothing of it removed"))
            continue
        keep = Keeper(cutoff, named, champion.artifact_dir if champion is not None else None)
        _prune_local(layout, symbol, keep, report)
        # As sync does: after a first remote failure the store is most likely unreachable,
        # so the rest waits for the next prune rather than for every retry's backoff.
        if storage is not None and not _prune_remote(symbol, storage, keep, report):
            storage = None


@dataclass(frozen=True)
class Keeper:
    """Why a folder stays (None: it goes)."""

    cutoff: datetime
    named: dict[str, str]  # folder → the newest kept day whose ledger names it
    champion: str | None

    def why(self, folder: str, made: datetime | None) -> str | None:
        if folder == self.champion:
            return CHAMPION
        if made is None or made >= self.cutoff:
            return TOO_RECENT  # remotely, a folder with no date in its name stays
        if folder in self.named:
            return f"named by the ledger of {self.named[folder]}"
        return None


def kept_days(layout: Layout, cutoff: datetime) -> list[str]:
    """Days whose ledgers protect what they name: those from the cutoff's day on, and
    those with uploads still pending."""
    first = run_day(cutoff)
    days = {p.name for p in (layout.root / "runs").glob("*Z") if p.is_dir() and p.name >= first}
    return sorted(days | set(days_marked_pending(layout)))


def ledger_named(layout: Layout, days: Iterable[str]) -> dict[str, str]:
    """Every attempt folder the days' ledgers name (relative to the root) → newest day."""
    named: dict[str, str] = {}
    for day in days:
        state = read_ledger(layout.status_path(day), layout.journal_path(day))
        for entry in state.entries.values():
            for folder in (entry.artifact_dir, *(a.artifact_dir for a in entry.attempts)):
                if folder:
                    named[_relative(layout, folder)] = day
    return named


def _relative(layout: Layout, folder: str) -> str:
    path = Path(folder)
    return layout.relative(path) if path.is_absolute() else PurePosixPath(folder).as_posix()


def _prune_local(layout: Layout, symbol: str, keep: Keeper, report: PruneReport) -> None:
    base = layout.model_dir(symbol)
    for leftover in base.glob(f"{PRUNING_PREFIX}*"):  # a prune that died midway
        if not report.dry_run:
            shutil.rmtree(leftover, ignore_errors=True)
    for folder in attempt_folders(layout, symbol):
        relative = layout.relative(folder)
        try:
            made = attempt_time(folder)
        except OSError as exc:  # gone meanwhile, or unreadable
            report.failures.append(Failure(relative, "local", _os_reason(exc)))
            continue
        why = keep.why(relative, made)
        if why is not None:
            report.kept.append(Kept(relative, iso(made), why))
            continue
        size = folder_bytes(folder)
        try:
            if not report.dry_run:
                _remove(folder)
        except OSError as exc:
            report.failures.append(Failure(relative, "local", _os_reason(exc)))
            continue
        report.removed.append(Removed(relative, iso(made), size))


def _remove(folder: Path) -> None:
    """Rename to a hidden name first: a half-removed folder never passes for an attempt."""
    hidden = folder.with_name(PRUNING_PREFIX + folder.name)
    folder.rename(hidden)
    shutil.rmtree(hidden)


def _prune_remote(symbol: str, storage: StorageClient, keep: Keeper, report: PruneReport) -> bool:
    """The symbol's remote folders that the rules let go; False after a failure."""
    base = f"models/{symbol}"
    try:
        keys = storage.list_keys(base)
    except (UploadError, ValueError) as exc:
        report.failures.append(Failure(base, "remote", f"{exc}; the remote prune stopped"))
        return False
    by_folder: dict[str, list[str]] = {}
    for key in keys:
        parts = key.split("/")
        if len(parts) > 3:  # models/<SYMBOL>/<folder>/...; files beside the folders stay
            by_folder.setdefault("/".join(parts[:3]), []).append(key)
    for folder, folder_keys in sorted(by_folder.items()):
        if keep.why(folder, stamp_time(folder.rsplit("/", 1)[-1])) is not None:
            continue
        deleted, failure = _delete_keys(storage, folder_keys, report.dry_run)
        if deleted:
            report.remote_removed.append(RemoteRemoved(folder, deleted))
        if failure is not None:
            report.failures.append(
                Failure(folder, "remote", f"{failure}; the remote prune stopped")
            )
            return False
    return True


def _delete_keys(storage: StorageClient, keys: list[str], dry_run: bool) -> tuple[int, str | None]:
    """Delete the folder's objects, its manifest first: a folder half deleted no longer
    claims to be a whole attempt."""
    if dry_run:
        return len(keys), None
    ordered = sorted(keys, key=lambda k: k.endswith("/sha256.txt"), reverse=True)
    deleted = 0
    for key in ordered:
        try:
            storage.delete(key)
        except (UploadError, ValueError) as exc:
            return deleted, str(exc)
        deleted += 1
    return deleted, None


def _os_reason(exc: OSError) -> str:
    return f"{exc.strerror or type(exc).__name__}: {exc.filename or ''}".rstrip(": ")


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"
