"""How long one item's start costs: a forked, preloaded child vs a fresh interpreter.

    python -m bench.item_start [--n 40]

"start" is from the driver's submit() to the child's first line of run_attempt (the child
reports it), for a process forked on demand and for one forked ahead of need, waiting to
be handed its attempt (as in a run); "round trip" is submit to reaped for a no-op trainer,
which adds the trainer call and the result file.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import print_table, summarise, write_results, write_tiny_universe
from retrainer.base.costs import SymbolCosts
from retrainer.engine.attempt import AttemptSpec
from retrainer.engine.drivers.local import LocalDriver
from retrainer.engine.supervisor import AttemptLimits

HEAVY_IMPORTS = "import torch, pandas, pyarrow.parquet"
SETTLE_S = 0.2


def _spec(folder: Path, symbol: str, n: int) -> AttemptSpec:
    costs = SymbolCosts(symbol, 10.0, 2.0, 1.0, 100)
    return AttemptSpec(
        run_id="bench",
        symbol=symbol,
        attempt=n,
        data_path=folder / "data" / f"{symbol}.parquet",
        min_rows=1000,
        costs=costs.to_dict(),
        out_dir=folder / "out" / f"{symbol}-{n}",
        log_dir=folder / "logs" / symbol,
        engine_log=folder / "logs" / "engine.log",
        trainer="bench.trainers:noop",
        params={},
        seed=1,
        device="cpu",
        threads=1,
    )


def measure_forked(folder: Path, n: int) -> dict[str, list[float]]:
    """Start and round-trip times (ms) of items forked on demand and handed to a process
    that was forked ahead of need, alternately."""
    driver = LocalDriver(["bench.trainers"])  # as a run of the bench trainers preloads
    driver.start()
    samples: dict[str, list[float]] = {}
    try:
        for i in range(2 * (n + 3)):  # the first ones wait for the forkserver's imports
            warm = i % 2 == 1
            if warm:  # forked, and given the time a run gives it: the slot's item runs
                driver.keep_warm(1, wait_s=60)
                time.sleep(SETTLE_S)
            spec = _spec(folder, "S00000", i + 1)
            spec.out_dir.mkdir(parents=True)
            began = time.perf_counter()
            supervisor = driver.submit(spec, AttemptLimits(timeout_s=60, kill_grace_s=1))
            driver.keep_warm(0)
            while not supervisor.outcome_ready():
                driver.wait([supervisor], 1.0)
            outcome = supervisor.outcome()
            elapsed_ms = (time.perf_counter() - began) * 1000
            assert outcome.startup_ms is not None, outcome.reason
            if i >= 6:
                how = "warm" if warm else "forked"
                samples.setdefault(f"{how}_start_ms", []).append(outcome.startup_ms)
                samples.setdefault(f"{how}_round_trip_ms", []).append(elapsed_ms)
    finally:
        driver.close()
    return samples


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
        forked = measure_forked(folder, args.n)
    fresh = measure_fresh_interpreter(max(3, args.n // 8))
    results = {name: summarise(values) for name, values in forked.items()}
    results["fresh_interpreter_ms"] = summarise(fresh)
    print_table(
        "Item start cost (ms)",
        ["what", "median", "min", "p90", "n"],
        [[name, r["median"], r["min"], r["p90"], int(r["n"])] for name, r in results.items()],
    )
    speedup = results["fresh_interpreter_ms"]["median"] / results["forked_start_ms"]["median"]
    print(f"\nforked start is {speedup:.0f}x cheaper than a fresh interpreter importing torch")
    warm = results["forked_start_ms"]["median"] / results["warm_start_ms"]["median"]
    print(f"a process forked ahead of need starts its attempt {warm:.0f}x sooner again")
    write_results("item_start", {**results, "speedup": speedup})


if __name__ == "__main__":
    main()
