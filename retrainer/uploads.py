"""Uploads artifacts through a storage client, off the scheduler's loop.

An upload never fails a training item and never loses an artifact: the item stays
`success` and its upload state says what happened, for a later sync to pick up.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import structlog

from retrainer.artifacts import Layout
from retrainer.logs import UPLOAD_FAILED, UPLOAD_SUCCEEDED
from retrainer.storage.base import StorageClient, UploadError


@dataclass(frozen=True)
class UploadBatch:
    """What became of one symbol's (or the run's) files."""

    symbol: str | None
    uploaded: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


class Uploader:
    def __init__(self, storage: StorageClient, layout: Layout, workers: int = 2) -> None:
        self.storage = storage
        self.layout = layout
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="upload")
        self._futures: list[Future[UploadBatch]] = []

    def submit(self, files: Iterable[Path], symbol: str | None = None) -> None:
        chosen = list(files)
        self._futures.append(self._pool.submit(self._upload_all, chosen, symbol))

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

    def _upload_all(self, files: list[Path], symbol: str | None) -> UploadBatch:
        log = structlog.get_logger().bind(symbol=symbol) if symbol else structlog.get_logger()
        uploaded = 0
        for path in files:
            key = self.layout.relative(path)
            try:
                result = self.storage.put_file(path, key)
            except (UploadError, OSError) as exc:
                log.warning(UPLOAD_FAILED, key=key, uri=self.storage.uri(key), error=str(exc))
                return UploadBatch(symbol, uploaded, f"{key}: {exc}")
            uploaded += 1
            log.info(UPLOAD_SUCCEEDED, uri=result.uri, bytes=result.bytes,
                     seconds=round(result.seconds, 4), skipped=result.skipped)
        return UploadBatch(symbol, uploaded, None)
