"""Two versions of retrainer, side by side in one run: the issue's five figures for a
baseline commit and for this tree, interleaved repeat by repeat so that a busy machine
slows both alike.

    python -m bench.compare [--baseline REF] [--repeats 3] [--quick]

The baseline is checked out into a temporary git worktree; each `retrainer run` gets that
tree first on PYTHONPATH (before the installed package), with the same interpreter and
venv. Prints a table and writes bench/results/compare.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from bench.common import REPO, print_table, write_results, write_tiny_universe
from bench.retrainer_run import Universe, dry_run_once, make_universe, run_once
from bench.workloads import SLEEP_S

# The figures of the scheduler's own cost (docs/benchmarks.md), each a function of the
# runs below: name -> (unit, how to compute it from one repeat's measurements).
FIGURES = (
    "overhead per item, no-op, k=2 (ms)",
    "cpu speedup k=1→2 (×)",
    "sleep efficiency, k=16 (%)",
    "ledger update 10k ÷ 10 symbols (×)",
    "dry run (s)",
)


def measure(
    tree: Path, work: Path, universes: dict[str, Universe], n: dict[str, int]
) -> dict[str, float]:
    noop = run_once(work, universes["noop"], "noop", 2, tree)
    cpu1 = run_once(work, universes["cpu"], "cpu", 1, tree)
    cpu2 = run_once(work, universes["cpu"], "cpu", 2, tree)
    sleep = run_once(work, universes["sleep"], "sleep", 16, tree)
    ideal_sleep_s = n["sleep"] * SLEEP_S / 16
    few, many = (_ledger_update_s(tree, count, n["ledger_updates"]) for count in (10, 10_000))
    return {
        FIGURES[0]: noop.command_s / n["noop"] * 1000.0,
        FIGURES[1]: cpu1.batch_s / cpu2.batch_s,
        FIGURES[2]: 100.0 * ideal_sleep_s / sleep.batch_s,
        FIGURES[3]: many / few,
        FIGURES[4]: dry_run_once(work, universes["dry"], tree),
    }


def _ledger_update_s(tree: Path, symbols: int, updates: int) -> float:
    code = (
        f"from bench.ledger_scaling import time_updates; print(time_updates({symbols}, {updates}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tree,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(tree)},
        check=True,
    )
    return float(done.stdout.strip().splitlines()[-1])


def _worktree(ref: str, folder: Path) -> Path:
    tree = folder / "baseline"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), ref],
        check=True,
        capture_output=True,
    )
    return tree


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default="HEAD", help="git ref to compare against")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    args = parser.parse_args(argv)
    n = (
        {"noop": 40, "cpu": 4, "sleep": 16, "dry": 40, "ledger_updates": 300}
        if args.quick
        else {"noop": 1000, "cpu": 16, "sleep": 64, "dry": 1000, "ledger_updates": 4000}
    )
    baseline_commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", args.baseline],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as tmp:
        work = Path(tmp)
        trees = {f"baseline {baseline_commit}": _worktree(args.baseline, work), "this tree": REPO}
        try:
            symbols = write_tiny_universe(work / "data", max(n["noop"], n["dry"]))
            universes = {
                kind: make_universe(work / kind, work / "data", symbols[:count])
                for kind, count in n.items()
                if kind != "ledger_updates"
            }
            samples: dict[str, dict[str, list[float]]] = {
                name: {f: [] for f in FIGURES} for name in trees
            }
            for repeat in range(args.repeats):
                for name, tree in trees.items():
                    for figure, value in measure(tree, work / "runs", universes, n).items():
                        samples[name][figure].append(value)
                    print(f"  repeat {repeat + 1}, {name}: done", flush=True)
        finally:
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(REPO),
                    "worktree",
                    "remove",
                    "--force",
                    str(trees[f"baseline {baseline_commit}"]),
                ],
                capture_output=True,
            )
    _report(samples, args.repeats, n)


def _report(samples: dict[str, dict[str, list[float]]], repeats: int, n: dict[str, int]) -> None:
    names = list(samples)
    median: Callable[[list[float]], float] = statistics.median
    rows = []
    for figure in FIGURES:
        base, this = (median(samples[name][figure]) for name in names)
        spread = [
            f"{min(samples[name][figure]):.3g}–{max(samples[name][figure]):.3g}" for name in names
        ]
        rows.append(
            [figure, f"{base:.3g}", spread[0], f"{this:.3g}", spread[1], f"{this / base:.2f}"]
        )
    print_table(
        f"Side by side, median of {repeats} interleaved repeats (range beside it); sizes {n}",
        ["figure", names[0], "range", names[1], "range", "this ÷ baseline"],
        rows,
    )
    write_results("compare", {"sizes": n, "repeats": repeats, "samples": samples})


if __name__ == "__main__":
    main()
