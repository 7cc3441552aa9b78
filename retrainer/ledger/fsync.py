"""fsyncs in a thread of their own: durability off the scheduler's loop.

An fsync waits for the file system's journal. With 16 items ending together, each of the
three fsyncs per item (the manifest, its folder, the ledger line) took 2 to 25 ms, one
after another on the loop, while the items' successors waited for their slots (bench/:
sleep items at k=16). Now the loop only writes (atomic renames and appends, safe against
a crash of this process) and queues the fsyncs here. This thread runs them in order,
each file once per batch (one fsync of the journal covers every line written before it).

What a power cut can still lose is what every plan rechecks: an attempt whose manifest
does not verify runs again, and an attempt left `running` in the ledger is settled from
its verified manifest (recovery.py). The run drains the queue before its summary, so the
morning report describes files that are on disk.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

# A path (a file or a folder, opened to be fsynced) or an open file descriptor.
Target = Path | int


class Syncer:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[Target] = []
        self._busy = False
        self._closed = False
        self._error: OSError | None = None
        self._thread = threading.Thread(target=self._run, name="retrainer-fsync", daemon=True)
        self._thread.start()

    def sync(self, *targets: Target) -> None:
        """Queue fsyncs, in this order after everything queued before."""
        with self._cond:
            self._queue.extend(targets)
            self._cond.notify_all()

    def drain(self) -> None:
        """Wait until everything queued so far is on disk; raise the first fsync error."""
        with self._cond:
            self._cond.wait_for(lambda: not self._queue and not self._busy)
            error, self._error = self._error, None
        if error is not None:
            raise error

    def close(self) -> None:
        self.drain()
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed)
                if not self._queue:
                    return  # closed, and nothing left
                batch, self._queue = _last_of_each(self._queue), []
                self._busy = True
            error = None
            for target in batch:
                try:
                    _fsync(target)
                except OSError as exc:
                    error = error or exc
            with self._cond:
                self._busy = False
                self._error = self._error or error
                self._cond.notify_all()


def _last_of_each(targets: list[Target]) -> list[Target]:
    """Each target once, where it last appears: a later fsync also covers what an earlier
    one of the same file would have, and keeps its place after what was queued before."""
    seen: set[Target] = set()
    kept = []
    for target in reversed(targets):
        if target not in seen:
            seen.add(target)
            kept.append(target)
    return kept[::-1]


def _fsync(target: Target) -> None:
    if isinstance(target, int):
        os.fsync(target)
        return
    fd = os.open(target, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
