"""Outward traffic as item listeners: uploads to storage and notifications.

The engine tells these what happened to each item; they never delay it (uploads run in
their own threads, notifiers send from theirs) and never fail it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from retrainer.base.artifacts import FEATURES_FILE
from retrainer.engine.events import ItemListener
from retrainer.ledger.entries import UploadState
from retrainer.ledger.journal import Ledger
from retrainer.mirror.uploads import UploadBatch, Uploader, mirrored_files
from retrainer.notify.protocol import Notifier
from retrainer.training.contract import read_partials


class UploadListener(ItemListener):
    """Mirrors each successful attempt's folder as it is recorded (and, with
    upload_partials, each partial output as soon as it is saved), and records in the
    ledger whether its upload went through."""

    def __init__(
        self,
        uploader: Uploader,
        ledger: Ledger,
        upload_partials: bool,
        upload_features: bool = True,
    ) -> None:
        self._uploader = uploader
        self._ledger = ledger
        self._upload_partials = upload_partials
        self._upload_features = upload_features
        self._partials_sent: dict[str, tuple[Path, set[str]]] = {}  # running: out_dir, sent

    def attempt_started(self, item_id: str, out_dir: Path) -> None:
        if self._upload_partials:
            self._partials_sent[item_id] = (out_dir, set())

    def attempt_ended(self, item_id: str, out_dir: Path) -> None:
        self._partials_sent.pop(item_id, None)

    def item_succeeded(self, item_id: str, out_dir: Path, files: Sequence[Path]) -> None:
        self._uploader.submit(mirrored_files(files, self._upload_features), item_id)

    def poll(self) -> None:
        self._upload_new_partials()
        self._record(self._uploader.finished())

    def drain(self) -> None:
        self._record(self._uploader.drain())

    def _upload_new_partials(self) -> None:
        for item_id, (out_dir, sent) in self._partials_sent.items():
            saved = read_partials(out_dir).get("files", {})
            new = sorted(set(saved) - sent)
            if not self._upload_features:
                new = [name for name in new if name != FEATURES_FILE]
            if new:
                sent.update(new)
                self._uploader.submit([out_dir / name for name in new], item_id, record=False)

    def _record(self, batches: list[UploadBatch]) -> None:
        for batch in batches:
            if batch.symbol is None or not batch.record:
                continue
            entry = self._ledger.get(batch.symbol)
            if entry is None:
                continue
            # A failed upload leaves the item `success` and its files pending for a sync.
            state = UploadState.UPLOADED if batch.ok else UploadState.PENDING
            self._ledger.record(replace(entry, upload=state, upload_error=batch.error))


class NotifyListener(ItemListener):
    """Tells the notifier about each item that failed for good (after its retries)."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier

    def item_failed(self, item_id: str, reason: str) -> None:
        self._notifier.item_failed(item_id, reason)
