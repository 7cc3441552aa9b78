"""The three item behaviours every system runs: the same code for retrainer and its peers."""

from __future__ import annotations

import time
from collections.abc import Callable

CPU_LOOP_ITERATIONS = 10_000_000  # about 0.25 s of CPU, pure Python, on one core here
SLEEP_S = 0.2


def noop_work() -> float:
    """Returns at once: what is left is the system's own cost."""
    return 0.0


def cpu_work() -> float:
    """A fixed single-threaded pure-Python loop (holds the GIL: threads would not help)."""
    total = 0
    for i in range(CPU_LOOP_ITERATIONS):
        total += i & 7
    return float(total)


def sleep_work() -> float:
    """Waiting, as for I/O or a GPU kernel: costs no CPU."""
    time.sleep(SLEEP_S)
    return SLEEP_S


WORK: dict[str, Callable[[], float]] = {"noop": noop_work, "cpu": cpu_work, "sleep": sleep_work}


def run_item(kind: str, index: int) -> float:
    """One item as a peer's task: a plain module-level function, picklable everywhere."""
    return WORK[kind]()


def calibrate_cpu_s(repeats: int = 3) -> float:
    """The cpu item's CPU seconds on this machine (its ideal), median of repeats."""
    samples = []
    for _ in range(repeats):
        began = time.process_time()
        cpu_work()
        samples.append(time.process_time() - began)
    return sorted(samples)[len(samples) // 2]
