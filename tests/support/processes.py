"""What tests need to know of the processes an item started: the pids the fault-injection
trainer recorded (tests.support.plugins), waiting for them, and checking none survived."""

from __future__ import annotations

import time
from pathlib import Path

import psutil


def recorded_pids(tmp_path: Path) -> list[int]:
    folder = tmp_path / "pids"
    return [int(p.read_text()) for p in folder.glob("*.pid")] if folder.exists() else []


def wait_for_pids(tmp_path: Path, count: int, within_s: float = 60) -> list[int]:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        pids = recorded_pids(tmp_path)
        if len(pids) >= count:
            return pids
        time.sleep(0.05)
    raise AssertionError(f"fewer than {count} items started")


def assert_all_dead(pids: list[int], within_s: float = 10.0) -> None:
    """Every pid gone (or a zombie) within within_s; else name each survivor and parent."""
    deadline = time.monotonic() + within_s
    alive = pids
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _alive(p)]
        time.sleep(0.05)
    assert not alive, f"still alive: {[_describe(p) for p in alive]}"


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _describe(pid: int) -> str:
    try:
        process = psutil.Process(pid)
        parent = psutil.Process(process.ppid())
        return (
            f"{pid} {process.status()} {' '.join(process.cmdline())[:80]!r} parent "
            f"{parent.pid} {' '.join(parent.cmdline())[:80]!r}"
        )
    except psutil.Error:
        return f"{pid} (gone)"
