"""The least a fresh process per item can cost here: the sleep figure with no Python work.

    python -c 'from bench.process_floor import main; main()' --n 64 --k 16 [--files]

Not retrainer: plain os.fork() children of a parent that holds what retrainer's zygote
holds (its worker's imports), forked ahead of need as retrainer's are, each handed its
item over a pipe. A child sleeps the sleep item's 0.2 s and exits; with --files it first
writes what an attempt must leave on disk (its log folder, log file, metrics.json and
result file, the last two atomically: temp file and rename), with bare system calls. The
parent sees each end through a pidfd and hands the slot on. Prints the wall from the
first hand-over to the last end and the efficiency against the ideal, as the suite
computes retrainer's; what this floor loses is what a process per item costs on this
machine before any of retrainer's own work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import select
import tempfile
import time
from typing import NoReturn

import retrainer.engine.worker  # noqa: F401  (the zygote's size: what every fork copies)
from bench.workloads import SLEEP_S


def _write_atomically(path: str, data: bytes) -> None:
    temp = path + ".tmp"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.write(fd, data)
    os.close(fd)
    os.rename(temp, path)


def _item(inbox: int, folder: str | None) -> NoReturn:
    symbol = os.read(inbox, 64).decode()
    if folder is not None:
        logs = f"{folder}/{symbol}"
        os.mkdir(logs)
        log = os.open(f"{logs}/attempt-1.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(log, b'{"event": "worker_ready"}\n')
        os.close(log)
    time.sleep(SLEEP_S)
    if folder is not None:
        _write_atomically(f"{logs}/metrics.json", b'{"value": 0.2}')
        _write_atomically(f"{logs}/attempt-1.result.json", b'{"ok": true}')
    os._exit(0)


def _fork_waiting(folder: str | None) -> tuple[int, int]:
    """A child blocked on its inbox; returns its pid and the inbox's write end."""
    inbox_r, inbox_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(inbox_w)
        _item(inbox_r, folder)
    os.close(inbox_r)
    return pid, inbox_w


def wall_s(n: int, k: int, folder: str | None) -> float:
    waiting = [_fork_waiting(folder) for _ in range(min(n, k))]
    time.sleep(0.3)  # as a run's first wave: forked while the plan was recorded
    running: dict[int, int] = {}  # pidfd -> pid
    started = 0
    began = last_end = time.perf_counter()
    while started < n or running:
        while started < n and len(running) < k:
            pid, inbox = waiting.pop(0)
            os.write(inbox, f"S{started:05d}".encode())
            os.close(inbox)
            running[os.pidfd_open(pid)] = pid
            started += 1
            if started + len(waiting) < n:  # its successor, forked ahead of need
                waiting.append(_fork_waiting(folder))
        ended, _, _ = select.select(list(running), [], [], 1.0)
        for pidfd in ended:
            os.waitpid(running.pop(pidfd), 0)
            os.close(pidfd)
            last_end = time.perf_counter()
    return last_end - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--k", type=int, default=16)
    parser.add_argument(
        "--files",
        action="store_true",
        help="each item writes the files an attempt leaves, with bare calls",
    )
    args = parser.parse_args()
    # Left for the caller's temporary tree to remove (see driver_floor.py).
    folder = tempfile.mkdtemp(prefix="retrainer-process-floor-") if args.files else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = wall_s(args.n, args.k, folder)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # all reaped by now
    ideal = math.ceil(args.n / args.k) * SLEEP_S
    cpu_ms = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000
    result = {
        "n": args.n,
        "k": args.k,
        "files": args.files,
        "wall_s": wall,
        "efficiency": ideal / wall,
        "per_item": {
            "children_cpu_ms": cpu_ms / args.n,
            "children_faults": (after.ru_minflt - before.ru_minflt) / args.n,
        },
    }
    print("FLOOR_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
