"""The local driver: each attempt in its own child process, forked from a preloaded zygote.

The zygote (zygote.py) imports torch and the worker once; each attempt is then a fork of
it, so it starts in milliseconds and shares the imported modules copy-on-write. The fork
itself is paid ahead of need (warm.py): up to one process per slot waits, forked while the
slot's current item runs, until it is handed its one attempt.

The scheduler keeps the write end of a lifeline pipe whose read end every child holds:
when the scheduler dies (even by SIGKILL) the pipe closes and each child takes its own
process group down; a warm process that was never handed an attempt sees its inbox close
and exits, and the zygote sees its control socket close and exits.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from multiprocessing.connection import wait

from retrainer.base.resources import Resources
from retrainer.engine.attempt import AttemptSpec
from retrainer.engine.drivers.protocol import AttemptHandle
from retrainer.engine.drivers.warm import WarmPool, dismiss
from retrainer.engine.drivers.zygote import Zygote
from retrainer.engine.supervisor import AttemptLimits, Supervisor
from retrainer.engine.worker import THREAD_ENV_VARS

# What every attempt runs. The heavy modules (torch) come from the trainer's
# preload_modules: a zygote that holds torch forks slower (docs/benchmarks.md).
BASE_PRELOAD = ("retrainer.engine.worker",)


class LocalDriver:
    def __init__(
        self,
        preload: Sequence[str] = (),
        threads: int = 1,
        bars: Sequence[tuple[str, int, dict[str, object]]] = (),
    ) -> None:
        """threads: the items' likely thread budget, for the libraries it preloads; bars:
        data files the zygote reads once for all its attempts (a backtest's symbols)."""
        self._threads = threads
        self._bars = list(bars)
        self._preload = list(dict.fromkeys([*BASE_PRELOAD, *preload]))
        self._zygote = Zygote()
        self._lifeline_w: int | None = None
        self._warm: WarmPool | None = None

    def start(self) -> None:
        lifeline_r, self._lifeline_w = os.pipe()
        # Its libraries get the items' thread budget, not the machine's: OpenBLAS rebuilds
        # its pool in every fork from the size it read at import, and a new pool's threads
        # busy-wait, so each child of a zygote sized for 2 cores burnt one beside its
        # 1-thread item (a quarter of all CPU in perf for no-op items). A child whose
        # budget differs resizes them (worker._limit_threads).
        try:
            # Started now: its imports (torch's take seconds) overlap the plan's work.
            self._zygote.start(
                self._preload,
                dict.fromkeys(THREAD_ENV_VARS, str(self._threads)),
                lifeline_r,
                self._bars,
            )
        finally:
            os.close(lifeline_r)  # the zygote and its children hold it now
        self._warm = WarmPool(self._zygote)

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

    def wait(self, running: Sequence[AttemptHandle], timeout_s: float) -> None:
        # Ended ones share one sentinel: the zygote's status pipe.
        sentinels = {h.sentinel for h in running if isinstance(h, Supervisor)}
        if sentinels:
            wait(list(sentinels), timeout=max(0.0, timeout_s))
        else:  # only retries waiting out their backoff: sleep rather than spin
            time.sleep(max(0.0, timeout_s))

    def resources(self) -> Resources | None:
        return None  # this machine's: the plan detects them

    @property
    def zygote_pid(self) -> int | None:
        return self._zygote.pid

    def warm_pids(self) -> list[int]:
        """The processes forked ahead of need, waiting for their attempt."""
        return self._warm.pids() if self._warm is not None else []

    def helper_pids(self) -> set[int]:
        """The zygote is the scheduler's child; the warm processes are the zygote's."""
        return {pid for pid in (self._zygote.pid, *self.warm_pids()) if pid is not None}

    def close(self) -> None:
        if self._warm is not None:
            self._warm.close()
            self._warm = None
        self._zygote.close()
        if self._lifeline_w is not None:
            os.close(self._lifeline_w)
            self._lifeline_w = None
