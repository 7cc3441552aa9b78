"""Nothing an item starts may outlive it: subreapers and sweeps of leftover processes.

A process that calls setsid() or double-forks leaves its parent's process group, and when
its parent dies it is reparented, normally to init, where no killpg reaches it. Linux lets
a process declare itself a *child subreaper* (prctl PR_SET_CHILD_SUBREAPER): orphans below
it are then reparented to it instead. Each item is a subreaper, so everything its trainer
starts stays its descendant while it lives; the scheduler is one too, so what an item
leaves behind when it dies lands on the scheduler, which kills it.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
from collections.abc import Collection

import psutil

_PR_SET_CHILD_SUBREAPER = 36
# The multiprocessing helpers (forkserver, resource tracker) are the scheduler's own.
_OWN_HELPERS = ("from multiprocessing.forkserver import", "from multiprocessing.resource_tracker")


def become_subreaper() -> bool:
    """Adopt orphaned descendants; False where the kernel does not offer it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def kill_descendants(pid: int | None = None) -> list[int]:
    """SIGKILL every descendant of pid (default: this process); returns their pids."""
    try:
        victims = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    return _kill_and_reap(victims)


def sweep_adopted_orphans(spare: Collection[int] = ()) -> list[int]:
    """Kill the children this process did not start on purpose: orphans it adopted as a
    subreaper. The multiprocessing helpers and the pids in spare are left alone."""
    orphans = []
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children():
            if child.pid in spare or _is_own_helper(child):
                continue
            orphans.append(child)
    victims = list(orphans)
    for orphan in orphans:
        with contextlib.suppress(psutil.Error):
            victims.extend(orphan.children(recursive=True))
    return _kill_and_reap(victims)


def _is_own_helper(process: psutil.Process) -> bool:
    try:
        cmdline = " ".join(process.cmdline())
    except psutil.Error:
        return False
    return any(marker in cmdline for marker in _OWN_HELPERS)


def _kill_and_reap(victims: list[psutil.Process], wait_s: float = 2.0) -> list[int]:
    killed = []
    for victim in victims:
        with contextlib.suppress(psutil.Error, OSError):
            victim.send_signal(signal.SIGKILL)
            killed.append(victim)
    # Waiting reaps those that are our own children: no zombie is left behind either.
    # Bounded, for a process stuck in the kernel (D state) dies only when it leaves it.
    with contextlib.suppress(psutil.Error, OSError):
        psutil.wait_procs(killed, timeout=wait_s)
    return [victim.pid for victim in killed]
