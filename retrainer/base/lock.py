"""One run per root at a time: an flock that dies with its holder, plus who holds it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import TracebackType

from filelock import FileLock, Timeout

from retrainer.base.artifacts import atomic_write_json
from retrainer.base.clock import iso, now_utc
from retrainer.base.errors import LockedError


class RunLock:
    """flock(2) on <root>/.retrainer.lock: the kernel releases it when the holder dies,
    so a lock left by a killed run is taken over by the next one without any guessing."""

    def __init__(self, lock_path: Path, run_id: str) -> None:
        self.lock_path = lock_path
        self.info_path = lock_path.with_name(lock_path.name + ".json")
        self.run_id = run_id
        self._lock = FileLock(str(lock_path), timeout=0)

    def __enter__(self) -> RunLock:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except Timeout:
            raise LockedError(self._holder_message()) from None
        atomic_write_json(
            self.info_path,
            {"pid": os.getpid(), "started_at": iso(now_utc()), "run_id": self.run_id},
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.info_path.unlink(missing_ok=True)
        self._lock.release()

    def _holder_message(self) -> str:
        try:
            holder = json.loads(self.info_path.read_text("utf-8"))
            who = f"pid {holder['pid']}, started {holder['started_at']} (run {holder['run_id']})"
        except (OSError, ValueError, KeyError, TypeError):
            who = "a process that has not written its details yet"
        return f"another retrainer run holds the lock on {self.lock_path.parent}: {who}"
