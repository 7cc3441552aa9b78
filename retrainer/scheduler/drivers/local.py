"""The local driver: each attempt in its own child process, forked from a preloaded server.

A forkserver imports torch and the worker once; each attempt is then a fork of it, so it
starts in milliseconds and shares the imported modules copy-on-write. The fork itself is
paid ahead of need (warm.py): up to one process per slot waits, forked while the slot's
current item runs, until it is handed its one attempt.

The scheduler keeps the write end of a lifeline pipe whose read end every child holds:
when the scheduler dies (even by SIGKILL) the pipe closes and each child takes its own
process group down; a warm process that was never handed an attempt sees its inbox close
and exits.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait

from retrainer.scheduler.drivers.warm import WarmPool, dismiss
from retrainer.scheduler.preload import PRELOAD_ENV
from retrainer.scheduler.supervisor import AttemptLimits, Supervisor
from retrainer.scheduler.worker import THREAD_ENV_VARS, AttemptSpec

# What every attempt runs. The heavy modules (torch) come from the trainer's
# preload_modules: a forkserver that holds torch forks about 7 ms slower. Not the CLI:
# the children's re-run of the main module (retrainer.__main__) does not import it.
BASE_PRELOAD = ("retrainer.scheduler.worker",)


class LocalDriver:
    def __init__(self, preload: Sequence[str] = (), threads: int = 1) -> None:
        """threads: the items' likely thread budget, for the libraries it preloads."""
        self._context = multiprocessing.get_context("forkserver")
        self._threads = threads
        self._preload = list(dict.fromkeys([*BASE_PRELOAD, *preload]))
        self._lifeline_r: Connection | None = None
        self._lifeline_w: Connection | None = None
        self._warm: WarmPool | None = None

    def start(self) -> None:
        self._context.set_forkserver_preload(["retrainer.scheduler.preload"])
        self._lifeline_r, self._lifeline_w = multiprocessing.Pipe(duplex=False)
        # The forkserver inherits this environment and imports the list through `preload`.
        # Its libraries get the items' thread budget, not the machine's: OpenBLAS rebuilds
        # its pool in every fork from the size it read at import, and a new pool's threads
        # busy-wait, so each child of a forkserver sized for 2 cores burnt one beside its
        # 1-thread item (a quarter of all CPU in perf for no-op items). A child whose
        # budget differs resizes them (worker._limit_threads).
        forkserver_env = {PRELOAD_ENV: ",".join(self._preload),
                          **dict.fromkeys(THREAD_ENV_VARS, str(self._threads))}
        with _environment(forkserver_env):
            # Start it now: its imports (about 1.5 s for torch) overlap the plan's work.
            forkserver.ensure_running()
        self._warm = WarmPool(self._context, self._lifeline_r)

    def keep_warm(self, count: int, wait_s: float = 0.0) -> bool:
        assert self._warm is not None, "start() the driver first"
        return self._warm.want(count, wait_s)

    def submit(self, spec: AttemptSpec, limits: AttemptLimits) -> Supervisor:
        assert self._warm is not None, "start() the driver first"
        spec.result_path.unlink(missing_ok=True)  # never classify by a stale result
        while True:
            warm, fresh = self._warm.take()
            try:
                warm.inbox.send(spec)
            except OSError:  # it died while it waited (the OOM killer, a stray kill)
                dismiss([warm])
                if fresh:
                    raise
                continue
            warm.inbox.close()
            return Supervisor(spec, warm.process, limits)

    def wait(self, running: Sequence[Supervisor], timeout_s: float) -> None:
        if running:
            wait([s.sentinel for s in running], timeout=max(0.0, timeout_s))
        else:  # only retries waiting out their backoff: sleep rather than spin
            time.sleep(max(0.0, timeout_s))

    def close(self) -> None:
        if self._warm is not None:
            self._warm.close()
            self._warm = None
        for conn in (self._lifeline_w, self._lifeline_r):
            if conn is not None:
                conn.close()
        self._lifeline_r = self._lifeline_w = None


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """These variables for a child started inside the block; this process's own after."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
