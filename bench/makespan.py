"""Makespan on a heterogeneous night, and the forecast's accuracy (issue 15, parts 1 and 3).

    python -m bench.makespan [--n 60] [--k 4] [--seed 15] [--xm_s 0.3] [--alpha 1.2] [--cap_s 8]

One root, three real `retrainer run` nights of the same n items, side by side:

  first night     no history: every item is new, so the queue is the plan's order
  second night    --force: history from the first night's ledger, longest first
  plan order      --force --order plan: the same history, the queue as the plan lists it

Each item sleeps for a duration drawn from a heavy-tailed (Pareto) distribution, seeded by
its symbol, so it takes as long every night (bench.trainers:heavy_tailed). For each night:
its makespan (the first attempt's start to the last one's end, from the ledger), the lower
bound max(Σt/k, max t) on the items' measured durations t that night, their ratio, and the
forecast the night started with (the run record's predicted finish) against its actual
finish (the last attempt's end), as an error relative to the night's length from its start.

Prints the table and writes bench/results/makespan.json.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import RESULTS, print_table, write_results, write_tiny_universe
from bench.retrainer_run import bench_env, make_universe, retrainer_command
from bench.trainers import heavy_tailed_s
from retrainer.base.artifacts import Layout
from retrainer.ledger.journal import read_ledger

NIGHTS = (
    ("first night", ()),
    ("second night", ("--force",)),
    ("plan order", ("--force", "--order", "plan")),
)


@dataclass(frozen=True)
class Night:
    name: str
    makespan_s: float  # the first attempt's start to the last one's end
    lower_bound_s: float  # max(sum(t) / k, max(t)) on this night's measured durations
    ratio: float
    sum_s: float
    max_s: float
    wall_s: float  # the run's start (its record) to the last attempt's end
    predicted_wall_s: float  # the run's start to the forecast's finish
    eta_error: float  # |predicted - actual finish| / wall_s
    forecast_known: int  # items whose expected duration came from history
    first_started: tuple[str, ...]  # the first items started, in order


def write_config(path: Path, symbols_csv: Path, data_dir: Path, root: Path, args: Any) -> Path:
    path.write_text(
        "[run]\n"
        f'mode = "hybrid"\nmax_concurrent = {args.k}\nsymbols = "{symbols_csv}"\n'
        f'retries = 0\nroot = "{root}"\nskip_fresh = false\n'
        f'[data]\npath = "{data_dir}"\nmin_rows = 1000\n'
        '[trainer]\nplugin = "bench.trainers:heavy_tailed"\n'
        "[trainer.params]\n"
        f"seed = {args.seed}\nxm_s = {args.xm_s}\nalpha = {args.alpha}\ncap_s = {args.cap_s}\n"
        '[storage]\nkind = "none"\n'
        '[promote]\nmode = "never"\n'
    )
    return path


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def measure_night(root: Path, name: str, k: int) -> Night:
    """The latest run of the day in the root's ledger: its attempts, record and forecast."""
    layout = Layout(root)
    day = sorted(p.parent.name for p in root.glob("runs/*/status.json"))[-1]
    state = read_ledger(layout.status_path(day), layout.journal_path(day))
    run = max(state.runs.values(), key=lambda r: str(r["started_at"]))
    began, ended = str(run["started_at"]), str(run["finished_at"])
    attempts = [
        (a.started_at, str(a.ended_at), float(a.seconds or 0.0), symbol)
        for symbol, entry in state.entries.items()
        for a in entry.attempts
        if began <= a.started_at <= ended and a.ended_at
    ]
    if not attempts:
        raise RuntimeError(f"{name}: no attempt in run {run['run_id']}")
    first = min(_at(a[0]) for a in attempts)
    last = max(_at(a[1]) for a in attempts)
    makespan = (last - first).total_seconds()
    durations = [a[2] for a in attempts]
    bound = max(sum(durations) / k, max(durations))
    wall = (last - _at(began)).total_seconds()
    predicted = (_at(str(run["forecast_finish_at"])) - _at(began)).total_seconds()
    order = tuple(a[3] for a in sorted(attempts)[:3])
    return Night(
        name=name,
        makespan_s=makespan,
        lower_bound_s=bound,
        ratio=makespan / bound,
        sum_s=sum(durations),
        max_s=max(durations),
        wall_s=wall,
        predicted_wall_s=predicted,
        eta_error=abs(predicted - wall) / wall,
        forecast_known=int(run.get("forecast_known", 0)),
        first_started=order,
    )


def run_nights(args: Any, work: Path) -> list[Night]:
    data_dir = work / "data"
    symbols = write_tiny_universe(data_dir, args.n)
    universe = make_universe(work, data_dir, symbols)
    root = work / "root"
    root.mkdir()
    config = write_config(root / "bench.toml", universe.symbols_csv, data_dir, root, args)
    nights = []
    for name, flags in NIGHTS:
        began = time.perf_counter()
        done = subprocess.run(
            retrainer_command(config, *flags),
            env=bench_env(),
            capture_output=True,
            text=True,
            timeout=1800,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{name}: retrainer run exited {done.returncode}:\n{done.stderr}")
        night = measure_night(root, name, args.k)
        nights.append(night)
        print(
            f"  {name}: makespan {night.makespan_s:.2f} s, bound {night.lower_bound_s:.2f} s, "
            f"command {time.perf_counter() - began:.1f} s",
            flush=True,
        )
    return nights


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=60)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--xm_s", type=float, default=0.3)
    parser.add_argument("--alpha", type=float, default=1.2)
    parser.add_argument("--cap_s", type=float, default=8.0)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    drawn = [
        heavy_tailed_s(f"S{i:05d}", args.seed, args.xm_s, args.alpha, args.cap_s)
        for i in range(args.n)
    ]
    print(
        f"makespan: {args.n} items, k = {args.k}, Pareto(xm {args.xm_s} s, alpha {args.alpha}) "
        f"capped at {args.cap_s} s: sum {sum(drawn):.1f} s, max {max(drawn):.2f} s",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-makespan-") as tmp:
        nights = run_nights(args, Path(tmp))
    print_table(
        f"Makespan on a heterogeneous night ({args.n} items, k = {args.k})",
        ["night", "makespan s", "bound s", "ratio", "predicted s", "actual s", "ETA error"],
        [
            (
                n.name,
                n.makespan_s,
                n.lower_bound_s,
                f"{n.ratio:.3f}",
                n.predicted_wall_s,
                n.wall_s,
                f"{n.eta_error:.1%}",
            )
            for n in nights
        ],
    )
    second = nights[1]
    print(
        f"second night: makespan {second.ratio:.3f}x the lower bound (target 1.05x); "
        f"predicted finish off by {second.eta_error:.1%} of the night (target 10 %)"
    )
    payload = {
        "items": args.n,
        "k": args.k,
        "durations": {
            "distribution": "pareto",
            "seed": args.seed,
            "xm_s": args.xm_s,
            "alpha": args.alpha,
            "cap_s": args.cap_s,
            "sum_s": round(sum(drawn), 3),
            "max_s": round(max(drawn), 3),
        },
        "nights": [asdict(n) for n in nights],
        "targets": {
            "second_night_ratio": {"value": second.ratio, "target": 1.05},
            "second_night_eta_error": {"value": second.eta_error, "target": 0.10},
        },
    }
    write_results("makespan", payload, args.results)
    return payload


if __name__ == "__main__":
    main()
