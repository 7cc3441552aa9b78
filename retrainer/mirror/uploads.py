"""Uploads artifacts through a storage client, off the scheduler's loop.

An upload never fails a training item and never loses an artifact: the item stays
`success` and its upload state says `pending` until the files are stored and verified
(by the run itself, by `retrainer sync`, or by the next nightly run, which syncs first).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog

from retrainer.base.artifacts import FEATURES_FILE, Layout
from retrainer.base.logs import UPLOAD_FAILED, UPLOAD_SUCCEEDED
from retrainer.mirror.storage.protocol import StorageClient, UploadError

# Written under runs/<day>/ while any upload of that day may be pending; removed once
# everything of the day is stored. A sync looks only at days that carry it.
PENDING_MARKER = ".uploads-pending"


@dataclass(frozen=True)
class UploadBatch:
    """What became of one symbol's (or the run's) files."""

    symbol: str | None
    uploaded: int
    error: str | None
    record: bool = True  # False for partial outputs: the ledger waits for the final batch

    @property
    def ok(self) -> bool:
        return self.error is None


def upload_files(
    storage: StorageClient,
    layout: Layout,
    files: Iterable[Path],
    symbol: str | None = None,
    record: bool = True,
) -> UploadBatch:
    """Upload files in order, logging one event per file; stop at the first failure."""
    log = structlog.get_logger().bind(symbol=symbol) if symbol else structlog.get_logger()
    uploaded = 0
    for path in files:
        key = layout.relative(path)
        started = time.monotonic()
        try:
            result = storage.put_file(path, key)
        except (UploadError, OSError, ValueError) as exc:
            log.warning(
                UPLOAD_FAILED,
                key=key,
                uri=_uri(storage, key),
                bytes=_size(path),
                seconds=round(time.monotonic() - started, 4),
                error=str(exc),
            )
            return UploadBatch(symbol, uploaded, f"{key}: {exc}", record)
        uploaded += 1
        log.info(
            UPLOAD_SUCCEEDED,
            key=key,
            uri=result.uri,
            bytes=result.bytes,
            seconds=round(result.seconds, 4),
            skipped=result.skipped,
        )
    return UploadBatch(symbol, uploaded, None, record)


class Uploader:
    def __init__(self, storage: StorageClient, layout: Layout, workers: int = 2) -> None:
        self.storage = storage
        self.layout = layout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")
        self._futures: list[Future[UploadBatch]] = []

    def submit(self, files: Iterable[Path], symbol: str | None = None, record: bool = True) -> None:
        chosen = list(files)
        # The caller's log context (run_id) goes along into the upload thread.
        context = contextvars.copy_context()
        self._futures.append(
            self._pool.submit(
                context.run, upload_files, self.storage, self.layout, chosen, symbol, record
            )
        )

    def finished(self) -> list[UploadBatch]:
        """The batches done since the last call (non-blocking)."""
        done = [f for f in self._futures if f.done()]
        self._futures = [f for f in self._futures if not f.done()]
        return [f.result() for f in done]

    def drain(self) -> list[UploadBatch]:
        """Wait for every batch still going."""
        pending, self._futures = self._futures, []
        return [f.result() for f in pending]

    def close(self) -> None:
        self._pool.shutdown(wait=True)


def _uri(storage: StorageClient, key: str) -> str | None:
    try:
        return storage.uri(key)
    except ValueError:
        return None


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def mirrored_files(files: Iterable[Path], upload_features: bool) -> list[Path]:
    """What of an attempt's files goes to storage: all, but features.parquet when
    [storage] upload_features is false (it stays on this machine)."""
    return [f for f in files if upload_features or f.name != FEATURES_FILE]
