"""How long one item's start costs: a forked, preloaded child vs a fresh interpreter.

    python -m bench.item_start [--n 40]

"start" is from the supervisor's spawn() call to the child's first line of run_attempt
(the child reports it); "round trip" is spawn to reaped for a no-op trainer, which adds
loading the symbol's data, the trainer call and the result file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import print_table, summarise, write_results, write_tiny_universe
from retrainer.costs import SymbolCosts
from retrainer.scheduler.drivers.local import LocalDriver
from retrainer.scheduler.supervisor import AttemptLimits
from retrainer.scheduler.worker import AttemptSpec

HEAVY_IMPORTS = "import torch, pandas, pyarrow.parquet"


def _spec(folder: Path, symbol: str, n: int) -> AttemptSpec:
    costs = SymbolCosts(symbol, 10.0, 2.0, 1.0, 100)
    return AttemptSpec(
        run_id="bench", symbol=symbol, attempt=n, data_path=folder / "data" / f"{symbol}.parquet",
        min_rows=1000, costs=costs.to_dict(), out_dir=folder / "out" / f"{symbol}-{n}",
        log_dir=folder / "logs" / symbol, engine_log=folder / "logs" / "engine.log",
        trainer="bench.trainers:noop", params={}, seed=1, device="cpu", threads=1,
    )


def measure_forked(folder: Path, n: int) -> tuple[list[float], list[float]]:
    # bench.common: each child re-imports this main module (multiprocessing's fix-up), and
    # with it bench.common's pandas, which must come preloaded as in a real run.
    driver = LocalDriver(["bench.trainers", "bench.common"])
    driver.start()
    starts, round_trips = [], []
    try:
        for i in range(n + 3):  # the first ones wait for the forkserver's imports
            spec = _spec(folder, "S00000", i + 1)
            spec.out_dir.mkdir(parents=True)
            began = time.perf_counter()
            supervisor = driver.submit(spec, AttemptLimits(timeout_s=60, kill_grace_s=1))
            while not supervisor.is_done():
                driver.wait([supervisor], 1.0)
            outcome = supervisor.reap()
            elapsed_ms = (time.perf_counter() - began) * 1000
            assert outcome.startup_ms is not None, outcome.reason
            if i >= 3:
                starts.append(outcome.startup_ms)
                round_trips.append(elapsed_ms)
    finally:
        driver.close()
    return starts, round_trips


def measure_fresh_interpreter(n: int) -> list[float]:
    samples = []
    for _ in range(n):
        began = time.perf_counter()
        subprocess.run([sys.executable, "-c", HEAVY_IMPORTS], check=True)
        samples.append((time.perf_counter() - began) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_tiny_universe(folder / "data", 1)
        starts, round_trips = measure_forked(folder, args.n)
    fresh = measure_fresh_interpreter(max(3, args.n // 8))
    results = {
        "forked_start_ms": summarise(starts),
        "forked_round_trip_ms": summarise(round_trips),
        "fresh_interpreter_ms": summarise(fresh),
    }
    print_table(
        "Item start cost (ms)", ["what", "median", "min", "p90", "n"],
        [[name, r["median"], r["min"], r["p90"], int(r["n"])] for name, r in results.items()],
    )
    speedup = results["fresh_interpreter_ms"]["median"] / results["forked_start_ms"]["median"]
    print(f"\nforked start is {speedup:.0f}x cheaper than a fresh interpreter importing torch")
    write_results("item_start", {**results, "speedup": speedup})


if __name__ == "__main__":
    main()
