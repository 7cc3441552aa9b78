"""The local driver: each attempt in its own child process, forked from a preloaded server.

A forkserver imports torch and the worker once; each attempt is then a fork of it, so it
starts in milliseconds and shares the imported modules copy-on-write. The scheduler keeps
the write end of a lifeline pipe whose read end every child holds: when the scheduler dies
(even by SIGKILL) the pipe closes and each child takes its own process group down.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing import forkserver
from multiprocessing.connection import Connection, wait

from retrainer.scheduler.preload import PRELOAD_ENV
from retrainer.scheduler.supervisor import AttemptLimits, Supervisor
from retrainer.scheduler.worker import THREAD_ENV_VARS, AttemptSpec

# retrainer.cli: children re-run the console script's imports (multiprocessing re-imports
# the main module), which must then cost nothing. The heavy modules (torch) come from the
# trainer's preload_modules: a forkserver that holds torch forks about 7 ms slower.
BASE_PRELOAD = ("retrainer.scheduler.worker", "retrainer.cli")


class LocalDriver:
    def __init__(self, preload: Sequence[str] = ()) -> None:
        self._context = multiprocessing.get_context("forkserver")
        self._preload = list(dict.fromkeys([*BASE_PRELOAD, *preload]))
        self._lifeline_r: Connection | None = None
        self._lifeline_w: Connection | None = None

    def start(self) -> None:
        self._context.set_forkserver_preload(["retrainer.scheduler.preload"])
        self._lifeline_r, self._lifeline_w = multiprocessing.Pipe(duplex=False)
        # The forkserver inherits this environment and imports the list through `preload`.
        # One thread for the libraries it loads: OpenBLAS rebuilds its pool in every fork
        # from the size it read at import, and an idle pool thread busy-waits, so a child
        # of a 2-thread forkserver burnt a core beside its item (a quarter of all CPU in
        # perf for no-op items). Each child sets its own budget (worker._limit_threads).
        forkserver_env = {PRELOAD_ENV: ",".join(self._preload),
                          **dict.fromkeys(THREAD_ENV_VARS, "1")}
        with _environment(forkserver_env):
            # Start it now: its imports (about 1.5 s for torch) overlap the plan's work.
            forkserver.ensure_running()

    def submit(self, spec: AttemptSpec, limits: AttemptLimits) -> Supervisor:
        assert self._lifeline_r is not None, "start() the driver first"
        supervisor = Supervisor(spec, self._context, self._lifeline_r, limits)
        supervisor.spawn()
        return supervisor

    def wait(self, running: Sequence[Supervisor], timeout_s: float) -> None:
        if running:
            wait([s.sentinel for s in running], timeout=max(0.0, timeout_s))
        else:  # only retries waiting out their backoff: sleep rather than spin
            time.sleep(max(0.0, timeout_s))

    def close(self) -> None:
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
