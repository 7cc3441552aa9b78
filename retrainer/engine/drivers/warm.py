"""Attempt processes forked ahead of need, by a thread of their own.

A fork through the zygote is a round trip of a few milliseconds (more on busy cores, and
with torch preloaded) that whoever asks for it waits out. The pool's thread pays it while
the slot's current item runs, so between two items the scheduler's loop only hands the
next attempt over a pipe. Each process still runs exactly one attempt and is never reused.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import NamedTuple

from retrainer.engine.drivers.zygote import Zygote, ZygoteChild

DISMISS_WAIT_S = 2.0
FORK_RETRY_S = 1.0  # after a failed fork (zygote gone): submit() reports the error


class WarmProcess(NamedTuple):
    """A started child blocked in run_when_handed until its attempt is sent to inbox."""

    process: ZygoteChild
    inbox: Connection


class WarmPool:
    def __init__(self, zygote: Zygote) -> None:
        self._zygote = zygote
        self._cond = threading.Condition()
        self._ready: deque[WarmProcess] = deque()
        self._wanted = 0
        self._failed_at: float | None = None
        self._closed = False
        self._thread = threading.Thread(
            target=self._fill, name="retrainer-warm-processes", daemon=True
        )
        self._thread.start()

    def want(self, count: int, wait_s: float = 0.0) -> bool:
        """Keep count processes ready; those beyond it are dismissed. Waits up to wait_s
        for them; True when no more waiting helps (all are ready, or forking fails)."""
        with self._cond:
            self._wanted = count
            surplus = [self._ready.pop() for _ in range(len(self._ready) - count)]
            self._cond.notify_all()
            done = self._cond.wait_for(
                lambda: len(self._ready) >= count or self._failed_at is not None, wait_s
            )
        dismiss(surplus)
        return done

    def pids(self) -> list[int]:
        with self._cond:
            return [w.process.pid for w in self._ready if w.process.pid is not None]

    def take(self) -> tuple[WarmProcess, bool]:
        """A ready process, else one forked now; and whether it was forked now."""
        with self._cond:
            if self._ready:
                warm = self._ready.popleft()
                self._cond.notify_all()  # one fewer ready: the thread forks its successor
                return warm, False
        return self.fork(), True

    def fork(self) -> WarmProcess:
        inbox_r, inbox_w = os.pipe()
        try:
            process = self._zygote.fork(inbox_r)
        except BaseException:
            os.close(inbox_w)
            raise
        finally:
            os.close(inbox_r)  # the new process holds it now
        return WarmProcess(process, Connection(inbox_w, readable=False))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()
        with self._cond:
            leftover, self._ready = list(self._ready), deque()
        dismiss(leftover)

    def _fill(self) -> None:
        while True:
            with self._cond:
                while not self._should_fork():
                    self._cond.wait(FORK_RETRY_S)
                if self._closed:
                    return
            try:
                warm = self.fork()
            except (OSError, EOFError, ValueError):
                with self._cond:
                    self._failed_at = time.monotonic()
                    self._cond.notify_all()
                continue
            with self._cond:
                keep = not self._closed and len(self._ready) < self._wanted
                if keep:
                    self._ready.append(warm)
                    self._failed_at = None
                self._cond.notify_all()
            if not keep:
                dismiss([warm])

    def _should_fork(self) -> bool:
        if self._closed:
            return True
        if self._failed_at is not None and time.monotonic() < self._failed_at + FORK_RETRY_S:
            return False
        return len(self._ready) < self._wanted


def dismiss(warm: Sequence[WarmProcess]) -> None:
    """Closing an inbox ends its process, which has run nothing; all close, then all are
    reaped."""
    for item in warm:
        item.inbox.close()
    for item in warm:
        item.process.join(DISMISS_WAIT_S)
        if item.process.exitcode is None:
            item.process.kill()
            item.process.join()
        item.process.close()
