"""`retrainer sync`: upload whatever a run left pending; the nightly job does it first.

A day needs a sync while its runs/<day>/.uploads-pending marker exists (a run writes it
before its first upload and removes it once every file of the day is stored), or when
asked for by name. For each symbol of the day that is `success` with upload `pending`
(or `failed`, from older ledgers) its artifact folder is checked locally against its
sha256.txt and uploaded; then the day's costs.json, status.json and summary. The first
failed upload ends the sync (the store is most likely unreachable): what is left stays
pending for the next try.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from retrainer.base.artifacts import (
    MANIFEST_NAME,
    Layout,
    artifact_files,
    atomic_write_text,
    verify_manifest,
)
from retrainer.base.clock import attempt_stamp, iso, now_utc, run_day
from retrainer.base.config import Settings
from retrainer.base.errors import BadInputError
from retrainer.base.lock import RunLock
from retrainer.base.logs import configure_logging
from retrainer.ledger.entries import ItemState, LedgerEntry, UploadState
from retrainer.ledger.journal import Ledger, read_ledger
from retrainer.mirror.storage.protocol import StorageClient
from retrainer.mirror.uploads import PENDING_MARKER, UploadBatch, mirrored_files, upload_files

NEEDS_UPLOAD = (UploadState.PENDING, UploadState.FAILED)


@dataclass
class SyncReport:
    days: list[str] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)  # "DAY SYMBOL"
    still_pending: list[str] = field(default_factory=list)
    unsyncable: list[str] = field(default_factory=list)  # local artifacts no longer verify
    errors: list[str] = field(default_factory=list)

    destination: str = ""

    @property
    def ok(self) -> bool:
        return not (self.still_pending or self.unsyncable or self.errors)

    def lines(self) -> list[str]:
        days = ", ".join(self.days) or "none"
        return [
            *(f"uploaded {line}" for line in self.uploaded),
            *(f"problem: {line}" for line in [*self.unsyncable, *self.errors]),
            f"days synced: {days}; {len(self.uploaded)} symbols uploaded, "
            f"{len(self.still_pending)} still pending, to {self.destination}",
        ]


def marker_path(layout: Layout, day: str) -> Path:
    return layout.run_dir(day) / PENDING_MARKER


def mark_pending(layout: Layout, day: str) -> None:
    atomic_write_text(marker_path(layout, day), iso(now_utc()) + "\n")


def days_marked_pending(layout: Layout) -> list[str]:
    return sorted(p.parent.name for p in (layout.root / "runs").glob(f"*/{PENDING_MARKER}"))


def sync_pending(
    root: Path, storage: StorageClient, day: str | None = None, upload_features: bool = True
) -> SyncReport:
    """Sync one named day, or every day still marked pending, oldest first."""
    layout = Layout(root)
    days = [day] if day is not None else days_marked_pending(layout)
    report = SyncReport()
    for name in days:
        report.days.append(name)
        if not sync_day(layout, name, storage, report, upload_features):
            break
    return report


def sync_day(
    layout: Layout,
    day: str,
    storage: StorageClient,
    report: SyncReport,
    upload_features: bool = True,
) -> bool:
    """Upload the day's pending files; False when an upload failed (stop syncing)."""
    ledger = Ledger(layout.status_path(day), layout.journal_path(day))
    reachable = True
    try:
        for symbol, entry in sorted(ledger.entries.items()):
            if entry.state is not ItemState.SUCCESS or entry.upload not in NEEDS_UPLOAD:
                continue
            if not reachable:
                report.still_pending.append(f"{day} {symbol}")
                continue
            reachable = _sync_entry(layout, day, ledger, entry, storage, report, upload_features)
    finally:
        ledger.close()
    if not reachable:
        return False
    run_files = [
        p
        for p in (layout.costs_path(day), layout.status_path(day), layout.summary_path(day))
        if p.is_file()
    ]
    batch = upload_files(storage, layout, run_files)
    if not batch.ok:
        report.errors.append(f"{day}: {batch.error}")
        return False
    pending = [
        e
        for e in read_ledger(layout.status_path(day), layout.journal_path(day)).entries.values()
        if e.state is ItemState.SUCCESS and e.upload is UploadState.PENDING
    ]
    if not pending:
        marker_path(layout, day).unlink(missing_ok=True)
    return True


def _sync_entry(
    layout: Layout,
    day: str,
    ledger: Ledger,
    entry: LedgerEntry,
    storage: StorageClient,
    report: SyncReport,
    upload_features: bool = True,
) -> bool:
    log = structlog.get_logger().bind(symbol=entry.symbol)
    folder = layout.root / (entry.artifact_dir or "")
    problems = (
        verify_manifest(folder, entry.manifest_sha256)
        if entry.artifact_dir
        else ["no artifact folder recorded"]
    )
    if problems:
        # Nothing verifiable to upload: say so once, and stop retrying it every night.
        reason = "local artifacts do not verify: " + "; ".join(problems[:3])
        ledger.record(replace(entry, upload=UploadState.FAILED, upload_error=reason))
        report.unsyncable.append(f"{day} {entry.symbol}: {reason}")
        log.warning("upload_unsyncable", day=day, reason=reason)
        return True
    files = mirrored_files([*artifact_files(folder), folder / MANIFEST_NAME], upload_features)
    batch = upload_files(storage, layout, files, entry.symbol)
    if batch.ok:
        ledger.record(replace(entry, upload=UploadState.UPLOADED, upload_error=None))
        report.uploaded.append(f"{day} {entry.symbol}")
        return True
    ledger.record(replace(entry, upload=UploadState.PENDING, upload_error=batch.error))
    report.still_pending.append(f"{day} {entry.symbol}")
    report.errors.append(f"{day} {entry.symbol}: {batch.error}")
    return False


def sync_before_run(root: Path, storage: StorageClient, upload_features: bool = True) -> SyncReport:
    """The nightly job's first step: earlier days' pending uploads, with one log line."""
    report = sync_pending(root, storage, upload_features=upload_features)
    if report.days:
        structlog.get_logger().info(
            "uploads_synced",
            days=report.days,
            uploaded=len(report.uploaded),
            still_pending=len(report.still_pending),
            unsyncable=len(report.unsyncable),
        )
    return report


def finish_run_uploads(layout: Layout, day: str, batches: list[UploadBatch]) -> None:
    """Drop the day's pending marker when the run's own uploads all went through."""
    if not all(b.ok for b in batches):
        return
    entries = read_ledger(layout.status_path(day), layout.journal_path(day)).entries
    if not any(e.state is ItemState.SUCCESS and e.upload in NEEDS_UPLOAD for e in entries.values()):
        marker_path(layout, day).unlink(missing_ok=True)


def run_sync(settings: Settings, storage: StorageClient, day: str | None) -> SyncReport:
    """`retrainer sync`: under the run lock, logged to today's engine log."""
    layout = Layout(settings.run.root.resolve())
    if day is not None and not (
        layout.status_path(day).exists() or layout.journal_path(day).exists()
    ):
        raise BadInputError(f"no run ledger for {day} under {layout.root}/runs")
    run_id = f"sync-{attempt_stamp(now_utc())}-{os.getpid()}"
    with RunLock(layout.lock_path(), run_id):
        configure_logging(layout.engine_log(run_day(now_utc())), settings.logging.level)
        structlog.contextvars.bind_contextvars(run_id=run_id)
        report = sync_pending(layout.root, storage, day, settings.storage.upload_features)
    report.destination = storage.describe()
    return report
