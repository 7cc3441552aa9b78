"""The supervisor owns ONE attempt's process: spawn, monitor, kill, classify.

It is the only code that starts, watches or kills an item's process. Every way an attempt
can end (exit code, signal, timeout, garbage result) becomes an Outcome with a reason
string a person can act on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from multiprocessing.connection import Connection
from multiprocessing.context import BaseContext
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import psutil

from retrainer.scheduler.items import ItemState, Outcome
from retrainer.scheduler.worker import AttemptSpec, run_attempt


class Supervisor:
    def __init__(
        self, spec: AttemptSpec, context: BaseContext, lifeline: Connection,
        timeout_s: float, kill_grace_s: float,
    ) -> None:
        self.spec = spec
        self.timeout_s = timeout_s
        self.kill_grace_s = kill_grace_s
        self.process: BaseProcess = context.Process(  # type: ignore[attr-defined]
            target=run_attempt, args=(spec, lifeline),
            name=f"retrainer:{spec.symbol}:{spec.attempt}", daemon=False,
        )
        self.started_monotonic = 0.0
        self._term_sent_at: float | None = None
        self._timed_out = False
        self._known_tree: set[int] = set()

    # -- spawn -----------------------------------------------------------------
    def spawn(self) -> int:
        self.spec.result_path.unlink(missing_ok=True)  # never classify by a stale result
        self.process.start()
        # From the fork on: start() itself may wait for the forkserver's first imports.
        self.started_monotonic = time.monotonic()
        assert self.process.pid is not None
        return self.process.pid

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def sentinel(self) -> int:
        return self.process.sentinel

    # -- monitor ---------------------------------------------------------------
    def is_done(self) -> bool:
        return self.process.exitcode is not None  # polls waitpid without blocking

    def next_wakeup(self) -> float:
        """The monotonic time at which this attempt next needs attention."""
        if self._term_sent_at is not None:
            return self._term_sent_at + self.kill_grace_s
        return self.started_monotonic + self.timeout_s

    def enforce_deadline(self, now: float) -> None:
        """Past the deadline: SIGTERM to the whole tree, then SIGKILL after the grace."""
        if self._term_sent_at is None and now >= self.started_monotonic + self.timeout_s:
            self._timed_out = True
            self.terminate()
        elif self._term_sent_at is not None and now >= self._term_sent_at + self.kill_grace_s:
            self.kill()

    # -- kill ------------------------------------------------------------------
    def terminate(self) -> None:
        if self._term_sent_at is None:
            self._term_sent_at = time.monotonic()
            self._signal_tree(signal.SIGTERM)
            if self.kill_grace_s <= 0:
                self.kill()

    def kill(self) -> None:
        self._signal_tree(signal.SIGKILL)

    def _signal_tree(self, sig: signal.Signals) -> None:
        pid = self.process.pid
        if pid is None:
            return
        # Remember descendants that may have left the group (setsid), to kill them too.
        with contextlib.suppress(psutil.Error):
            self._known_tree.update(c.pid for c in psutil.Process(pid).children(recursive=True))
        for target in (pid, *self._known_tree):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(target, sig)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, sig)

    def reap(self) -> Outcome:
        """Once the process has ended: sweep what is left of its tree, then classify."""
        self.process.join()
        exit_code = self.process.exitcode
        self._sweep_group()
        self.process.close()
        return classify(self.spec, exit_code, self._timed_out, self.timeout_s)

    def _sweep_group(self) -> None:
        pid = self.process.pid
        if pid is None:
            return
        for target in (pid, *self._known_tree):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(target, signal.SIGKILL)


def classify(
    spec: AttemptSpec, exit_code: int | None, timed_out: bool, timeout_s: float
) -> Outcome:
    result = _read_result(spec.result_path)
    startup_ms = result.get("startup_ms") if result else None
    if timed_out:
        return Outcome(ItemState.TIMEOUT, f"timed out after {_duration(timeout_s)}; process "
                       "tree killed", exit_code=exit_code, startup_ms=startup_ms)
    if exit_code == 0 and result and result.get("ok"):
        return Outcome(ItemState.SUCCESS, "ok", exit_code=0, metrics=result.get("metrics"),
                       startup_ms=startup_ms)
    if result and not result.get("ok"):
        error_type = str(result.get("error_type", "Error"))
        return Outcome(
            ItemState.FAILED, f"{error_type}: {result.get('message', '')}".rstrip(": "),
            exit_code=exit_code, error_type=error_type,
            stack=tuple(result.get("stack", ())), startup_ms=startup_ms,
        )
    return Outcome(ItemState.FAILED, _describe_exit(exit_code, spec), exit_code=exit_code,
                   error_type="ProcessDied" if exit_code and exit_code < 0 else "ProcessExited")


def _describe_exit(exit_code: int | None, spec: AttemptSpec) -> str:
    where = f"see {spec.stdout_path}"
    if exit_code is None:
        return f"process vanished without an exit status; {where}"
    if exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        return f"killed by {name} (exit status {exit_code}); {where}"
    if exit_code == 0:
        return f"exited with code 0 but left no result; {where}"
    return f"exited with code {exit_code} without a result; {where}"


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
