"""The floor under retrainer's per-item overhead: a fresh process per item, no scheduler.

    python -m bench.fork_floor --via zygote|forkserver --n 200 --k 2

Starts n processes, k at a time, each preloaded with what retrainer's local driver
preloads for the bench trainers (its worker), and reports (wall / n) x k in ms: the same
formula as the overhead figure. "zygote" is retrainer's own (drivers/zygote.py): each
process is forked, starts its session and lifeline as an attempt does, and exits at once,
handed nothing. "forkserver" is multiprocessing's forkserver running an empty function:
the generic machinery the zygote replaced. What is left of retrainer's figure above the
zygote's floor is the scheduler's own work and the item's files. One variant per
interpreter: a process has one forkserver.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import select
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

from retrainer.engine.drivers.local import BASE_PRELOAD
from retrainer.engine.drivers.zygote import Zygote, ZygoteChild

PRELOAD = [*BASE_PRELOAD, "bench.trainers"]


def _empty() -> None:
    return None


def forkserver_ms(n: int, k: int) -> float:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    warm = context.Process(target=_empty)  # waits for the forkserver's imports
    warm.start()
    warm.join()
    began = time.perf_counter()
    running: list[BaseProcess] = []
    started = 0
    while started < n or running:
        while started < n and len(running) < k:
            process: BaseProcess = context.Process(target=_empty)
            process.start()
            running.append(process)
            started += 1
        wait([p.sentinel for p in running])
        for process in [p for p in running if p.exitcode is not None]:
            process.join()
            running.remove(process)
    return (time.perf_counter() - began) / n * k * 1000


def zygote_ms(n: int, k: int) -> float:
    zygote = Zygote()
    lifeline_r, lifeline_w = os.pipe()
    zygote.start(PRELOAD, {}, lifeline_r)
    os.close(lifeline_r)
    try:
        _reap(_fork_handed_nothing(zygote))  # waits for the zygote's imports
        began = time.perf_counter()
        running: dict[int, ZygoteChild] = {}  # by pidfd
        started = 0
        while started < n or running:
            while started < n and len(running) < k:
                child = _fork_handed_nothing(zygote)
                assert child.pidfd is not None, "needs pidfds (Linux 5.3+)"
                running[child.pidfd] = child
                started += 1
            ended, _, _ = select.select(list(running), [], [])
            for pidfd in ended:
                _reap(running.pop(pidfd))
        return (time.perf_counter() - began) / n * k * 1000
    finally:
        zygote.close()
        os.close(lifeline_w)


def _fork_handed_nothing(zygote: Zygote) -> ZygoteChild:
    """A process whose inbox closes at once: it exits, handed nothing."""
    inbox_r, inbox_w = os.pipe()
    try:
        return zygote.fork(inbox_r)
    finally:
        os.close(inbox_r)
        os.close(inbox_w)


def _reap(child: ZygoteChild) -> None:
    child.join()
    child.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--via", choices=["zygote", "forkserver"], required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--k", type=int, default=2)
    args = parser.parse_args()
    measure = zygote_ms if args.via == "zygote" else forkserver_ms
    result = {"via": args.via, "per_item_ms": measure(args.n, args.k)}
    print("FLOOR_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
