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
import os
import signal
from collections.abc import Collection
from typing import Any

import psutil

_PR_SET_CHILD_SUBREAPER = 36


def _libc_prctl() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once, at import: in the zygote, not again in every attempt's process.
_PRCTL = _libc_prctl()


def become_subreaper() -> bool:
    """Adopt orphaned descendants; False where the kernel does not offer it."""
    return _PRCTL is not None and _PRCTL(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def child_pids(pid: int) -> list[int]:
    """pid's children, from the kernel's list for each of its threads: what a supervisor
    polls several times a second per item. psutil's children() reads the status of
    every process on the machine instead, a cost that grows with the machine's process
    count and the number of items polled. psutil where the kernel lacks the lists
    (CONFIG_PROC_CHILDREN)."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []  # gone
    pids: list[int] = []
    for tid in threads:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as listing:
                pids.extend(int(p) for p in listing.read().split())
        except FileNotFoundError:
            if os.path.exists(f"/proc/{pid}/task/{tid}"):  # not a thread gone: no lists
                return _psutil_children(pid)
        except OSError:
            continue
    return pids


def descendant_pids(pid: int) -> list[int]:
    """Children, their children, and so on: a walk of pid's tree only."""
    found: list[int] = []
    frontier = [pid]
    while frontier:
        children = [c for parent in frontier for c in child_pids(parent) if c not in found]
        found.extend(children)
        frontier = children
    return found


def _psutil_children(pid: int) -> list[int]:
    try:
        return [child.pid for child in psutil.Process(pid).children()]
    except psutil.Error:
        return []


def _processes(pids: Collection[int]) -> list[psutil.Process]:
    processes = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            processes.append(psutil.Process(pid))
    return processes


def kill_descendants(pid: int | None = None) -> list[int]:
    """SIGKILL every descendant of pid (default: this process); returns their pids."""
    return _kill_and_reap(_processes(descendant_pids(os.getpid() if pid is None else pid)))


def sweep_adopted_orphans(spare: Collection[int] = ()) -> list[int]:
    """Kill the children this process did not start on purpose: orphans it adopted as a
    subreaper. The pids in spare (the driver's helpers, running attempts) are left alone."""
    orphans = [child for child in _processes(child_pids(os.getpid())) if child.pid not in spare]
    victims = list(orphans)
    for orphan in orphans:
        victims.extend(_processes(descendant_pids(orphan.pid)))
    return _kill_and_reap(victims)


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
