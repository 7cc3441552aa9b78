"""The supervisor owns ONE attempt's process from its hand-over: monitor, kill, classify.

The driver forks the process (often ahead of need) and hands it the attempt; from then on
this is the only code that watches or kills it. Every way an attempt can end (exit code,
signal, timeout, memory limit, garbage result) becomes an Outcome with a reason string a
person can act on.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from dataclasses import dataclass, replace
from typing import Protocol

import psutil

from retrainer.engine.attempt import EXIT_OK, EXIT_RESULT_NOT_WRITTEN, AttemptResult, AttemptSpec
from retrainer.engine.reaper import descendant_pids
from retrainer.ledger.entries import ItemState, Outcome

# RSS is sampled this often; the tree's membership (which costs a /proc scan) less often.
MEMORY_POLL_S = 0.2
TREE_REFRESH_S = 1.0


@dataclass(frozen=True)
class AttemptLimits:
    timeout_s: float
    kill_grace_s: float
    memory_cap_mb: int | None = None
    # The share of a GPU the item is expected to need (policy.gpu_share): a driver that
    # places attempts by it asks for it (Ray's fractional num_gpus); None: the configured.
    gpu_share: float | None = None


class AttemptProcess(Protocol):
    """The driver's handle on an attempt's process: what the supervisor needs of it."""

    @property
    def pid(self) -> int | None: ...

    @property
    def pidfd(self) -> int | None:
        """Readable once the process has ended (Linux 5.3+), owned and closed by the
        handle; None without pidfds."""

    @property
    def sentinel(self) -> int:
        """Readable when the exit status may have arrived."""

    @property
    def exitcode(self) -> int | None:
        """Once known: the exit code, or minus the signal that killed it. Never blocks."""

    def join(self, timeout: float | None = None) -> None: ...

    def close(self) -> None: ...


class Supervisor:
    def __init__(self, spec: AttemptSpec, process: AttemptProcess, limits: AttemptLimits) -> None:
        """process has just been handed spec: its time, and its deadline, start now."""
        self.spec = spec
        self.process = process
        self.timeout_s = limits.timeout_s
        self.kill_grace_s = limits.kill_grace_s
        self.memory_cap_mb = limits.memory_cap_mb
        self.started_monotonic = time.monotonic()
        self._term_sent_at: float | None = None
        self._timed_out = False
        self._memory_exceeded: str | None = None
        self.peak_rss_mb: float | None = None  # the largest tree RSS sampled so far
        self._known_tree: set[int] = set()
        self._tree: dict[int, psutil.Process] = {}
        # An item that ends within the first poll interval never pays for a /proc scan.
        self._next_memory_poll = self.started_monotonic + MEMORY_POLL_S
        self._next_tree_refresh = 0.0
        self._ended = False

    @property
    def pid(self) -> int | None:
        return self.process.pid

    @property
    def sentinel(self) -> int:
        """Readable when there is news: first that the process ended, then its status."""
        pidfd = self.process.pidfd
        if pidfd is not None and not self._ended:
            return pidfd
        return self.process.sentinel

    # -- monitor ---------------------------------------------------------------
    def has_exited(self) -> bool:
        """The process is gone, seen by the kernel's pidfd at once. Its exit status comes
        later, from the zygote (its parent), which may be busy forking."""
        if not self._ended:
            pidfd = self.process.pidfd
            if pidfd is None:
                self._ended = self.process.exitcode is not None
            else:
                self._ended = bool(select.select([pidfd], [], [], 0)[0])
        return self._ended

    def outcome_ready(self) -> bool:
        """Ended, with its exit status known: outcome() does not block."""
        return self.has_exited() and self.process.exitcode is not None  # polls, no block

    def next_wakeup(self) -> float:
        """The monotonic time at which this attempt next needs attention."""
        if self._term_sent_at is not None:
            return self._term_sent_at + self.kill_grace_s
        deadline = self.started_monotonic + self.timeout_s
        if self.memory_cap_mb is None or self._memory_exceeded:
            return deadline
        return min(deadline, self._next_memory_poll)

    def enforce_limits(self, now: float) -> None:
        """Past the deadline: SIGTERM to the whole tree, then SIGKILL after the grace.
        Over the memory cap: SIGKILL at once, before the machine starts to swap."""
        if (
            self.memory_cap_mb is not None
            and not self._memory_exceeded
            and now >= self._next_memory_poll
        ):
            self._check_memory(now)
        if self._term_sent_at is None and now >= self.started_monotonic + self.timeout_s:
            self._timed_out = True
            self.terminate()
        elif self._term_sent_at is not None and now >= self._term_sent_at + self.kill_grace_s:
            self.kill()

    def _check_memory(self, now: float) -> None:
        assert self.memory_cap_mb is not None
        self._next_memory_poll = now + MEMORY_POLL_S
        if now >= self._next_tree_refresh:
            self._next_tree_refresh = now + TREE_REFRESH_S
            self._refresh_tree()
        rss = 0
        for pid, process in list(self._tree.items()):
            try:
                rss += process.memory_info().rss
            except psutil.Error:
                del self._tree[pid]
        rss_mb = rss / 2**20
        self.peak_rss_mb = max(self.peak_rss_mb or 0.0, rss_mb)
        if rss_mb > self.memory_cap_mb:
            self._memory_exceeded = (
                f"memory limit: the process tree used {rss_mb:,.0f} MB, over the "
                f"{self.memory_cap_mb:,} MB cap (max_memory_mb); killed"
            )
            self._term_sent_at = self._term_sent_at or now
            self.kill()

    def _refresh_tree(self) -> None:
        pid = self.process.pid
        assert pid is not None
        descendants = descendant_pids(pid)
        tree: dict[int, psutil.Process] = {}
        for member in (pid, *descendants):
            # Keep the cached objects: psutil checks a reused pid against its start time.
            with contextlib.suppress(psutil.Error):
                tree[member] = self._tree.get(member) or psutil.Process(member)
        self._tree = tree
        self._known_tree.update(descendants)

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
        self._known_tree.update(descendant_pids(pid))
        for target in (pid, *self._known_tree):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(target, sig)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(target, sig)

    def outcome(self) -> Outcome:
        """Once the process has ended: sweep what is left of its tree, then classify."""
        self.process.join()
        exit_code = self.process.exitcode
        self._sweep_group()
        self.process.close()
        if self._memory_exceeded:
            return Outcome(
                ItemState.FAILED,
                self._memory_exceeded,
                exit_code=exit_code,
                error_type="MemoryLimit",
                peak_rss_mb=self.peak_rss_mb,
            )
        return classify(self.spec, exit_code, self._timed_out, self.timeout_s, self.peak_rss_mb)

    def _sweep_group(self) -> None:
        pid = self.process.pid
        if pid is None:
            return
        for target in (pid, *self._known_tree):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(target, signal.SIGKILL)


def classify(
    spec: AttemptSpec,
    exit_code: int | None,
    timed_out: bool,
    timeout_s: float,
    sampled_peak_mb: float | None = None,
) -> Outcome:
    """The end, with the attempt's memory peaks: the tree's RSS as sampled every
    MEMORY_POLL_S (children included, a short peak may fall between samples) or the
    process's own ru_maxrss from its result (exact, its reaped children's largest too),
    the larger; the GPU's from its result."""
    result = AttemptResult.read(spec.result_path)
    outcome = _classify(spec, result, exit_code, timed_out, timeout_s)
    if result is None:
        return replace(outcome, peak_rss_mb=sampled_peak_mb)
    peaks = [p for p in (sampled_peak_mb, result.peak_rss_mb) if p is not None]
    return replace(
        outcome, peak_rss_mb=max(peaks) if peaks else None, gpu_peak_mb=result.gpu_peak_mb
    )


def _classify(
    spec: AttemptSpec,
    result: AttemptResult | None,
    exit_code: int | None,
    timed_out: bool,
    timeout_s: float,
) -> Outcome:
    startup_ms = result.startup_ms if result else None
    if timed_out:
        return Outcome(
            ItemState.TIMEOUT,
            f"timed out after {_duration(timeout_s)}; process tree killed",
            exit_code=exit_code,
            startup_ms=startup_ms,
        )
    if exit_code == EXIT_OK and result and result.ok:
        return Outcome(
            ItemState.SUCCESS, "ok", exit_code=0, metrics=result.metrics, startup_ms=startup_ms
        )
    if result and not result.ok:
        return Outcome(
            ItemState.FAILED,
            result.reason,
            exit_code=exit_code,
            error_type=result.error_type,
            stack=result.stack,
            startup_ms=startup_ms,
        )
    return Outcome(
        ItemState.FAILED,
        _describe_exit(exit_code, spec),
        exit_code=exit_code,
        error_type="ProcessDied" if exit_code and exit_code < 0 else "ProcessExited",
    )


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
    if exit_code == EXIT_RESULT_NOT_WRITTEN:
        return f"could not write its result file {spec.result_path} (disk full or read-only?)"
    return f"exited with code {exit_code} without a result; {where}"


def _duration(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"
