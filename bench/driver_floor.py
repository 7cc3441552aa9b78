"""The floor under the sleep figure: retrainer's process machinery with nothing around it.

    python -c 'from bench.driver_floor import main; main()' --n 64 --k 16

The local driver as a run uses it (a fresh process per item, forked by the zygote ahead
of need and handed its attempt; its end seen by pidfd), driven by a bare loop: no plan,
ledger, manifests, fsyncs or log lines of the scheduler's own. Each item is the bench
sleep trainer. Prints the wall from the first hand-over to the last end, and the
efficiency against the ideal (waves x the sleep), as the suite computes retrainer's; and
what each attempt's process cost, read from the zygote, which reaps them all: its CPU
(user and system) and its page faults, with the zygote's own CPU per fork. What retrainer
loses beyond this floor is its bookkeeping; what this floor loses is what a process per
item costs on this machine (forking, starting and ending k processes at once).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

from bench.item_start import SETTLE_S
from bench.workloads import SLEEP_S
from retrainer.base.costs import SymbolCosts
from retrainer.engine.attempt import AttemptSpec
from retrainer.engine.drivers.local import LocalDriver
from retrainer.engine.supervisor import AttemptLimits, Supervisor

LIMITS = AttemptLimits(timeout_s=60, kill_grace_s=1)


def _spec(folder: Path, i: int) -> AttemptSpec:
    symbol = f"S{i:05d}"
    out_dir = folder / "out" / symbol
    out_dir.mkdir(parents=True)
    return AttemptSpec(
        run_id="floor",
        symbol=symbol,
        attempt=1,
        data_path=folder / "none.parquet",
        min_rows=1,
        costs=SymbolCosts(symbol, 10.0, 2.0, 1.0, 100).to_dict(),
        out_dir=out_dir,
        log_dir=folder / "logs" / symbol,
        engine_log=folder / "engine.log",
        trainer="bench.trainers:sleep",
        params={},
        seed=1,
        device="cpu",
        threads=1,
    )


def zygote_counters(pid: int) -> dict[str, float]:
    """From /proc/<pid>/stat: the zygote's own CPU (ms), and its reaped children's CPU
    (ms) and minor page faults."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
    return {
        "own_cpu_ms": (int(fields[11]) + int(fields[12])) * tick_ms,
        "children_cpu_ms": (int(fields[13]) + int(fields[14])) * tick_ms,
        "children_faults": int(fields[8]),
    }


def wall_s(folder: Path, n: int, k: int, cost: dict[str, float] | None = None) -> float:
    """The batch wall; cost, if given, gets each attempt's process cost (per item)."""
    driver = LocalDriver(["bench.trainers"])
    driver.start()
    try:
        driver.keep_warm(min(k, n), wait_s=60)
        time.sleep(SETTLE_S)  # as a run's first wave: forked while the plan was recorded
        zygote = driver.zygote_pid
        assert zygote is not None
        before = zygote_counters(zygote)
        running: list[Supervisor] = []
        ending: list[Supervisor] = []
        started = 0
        began = last_end = time.perf_counter()
        while started < n or running or ending:
            while started < n and len(running) < k:
                running.append(driver.submit(_spec(folder, started), LIMITS))
                started += 1
            driver.keep_warm(min(k, n - started))
            driver.wait([*running, *ending], 1.0)
            for supervisor in [s for s in running if s.has_exited()]:
                running.remove(supervisor)
                ending.append(supervisor)
                last_end = time.perf_counter()  # as a run's ended_at: when the end is seen
            for supervisor in [s for s in ending if s.outcome_ready()]:
                ending.remove(supervisor)
                supervisor.outcome()
        if cost is not None:
            driver.keep_warm(0)  # the last warm ones reaped too, then counted per item
            after = zygote_counters(zygote)
            cost.update({key: (after[key] - before[key]) / n for key in after})
        return last_end - began
    finally:
        driver.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=64)
    parser.add_argument("--k", type=int, default=16)
    args = parser.parse_args()
    # Left for the caller's temporary tree to remove: deleting thousands of files between
    # two measurements slows the next one's file creations (ext4 without a journal skips
    # recently freed inodes one by one).
    cost: dict[str, float] = {}
    wall = wall_s(Path(tempfile.mkdtemp(prefix="retrainer-driver-floor-")), args.n, args.k, cost)
    ideal = math.ceil(args.n / args.k) * SLEEP_S
    result = {
        "n": args.n,
        "k": args.k,
        "wall_s": wall,
        "efficiency": ideal / wall,
        "per_item": cost,
    }
    print("FLOOR_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
