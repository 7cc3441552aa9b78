"""The floor under retrainer's per-item overhead: bare forkserver processes, no scheduler.

    python -m bench.fork_floor --preload retrainer|none --n 200 --k 2

Starts n processes that run an empty function, k at a time, from a forkserver that has
imported what retrainer's local driver preloads for the bench trainers (its worker) or
nothing, and reports (wall / n) x k in ms: the same formula as the overhead figure.
What is left of retrainer's figure above this is the scheduler's own work. One variant
per interpreter: a process has one forkserver.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import time
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

# No module-level imports beyond the standard library: each child re-imports this module
# (multiprocessing's main-module fixup), and "none" must stay empty.


def _empty() -> None:
    return None


def per_item_ms(preload: list[str], n: int, k: int) -> float:
    context = multiprocessing.get_context("forkserver")
    if preload:  # as retrainer's local driver does it, warm-up included
        from retrainer.scheduler.preload import PRELOAD_ENV

        os.environ[PRELOAD_ENV] = ",".join(preload)
        context.set_forkserver_preload(["retrainer.scheduler.preload"])
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--preload", choices=["retrainer", "none"], required=True)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--k", type=int, default=2)
    args = parser.parse_args()
    preload: list[str] = []
    if args.preload == "retrainer":
        from retrainer.scheduler.drivers.local import BASE_PRELOAD

        preload = [*BASE_PRELOAD, "bench.trainers"]
    result = {"preload": args.preload, "per_item_ms": per_item_ms(preload, args.n, args.k)}
    print("FLOOR_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
