"""Two stages against one-stage hybrid, by a CPU simulation (issue 15, part 4).

    python -m bench.two_stage [--n 12] [--prepare_s 1.0] [--train_s 0.5] [--prepare_slots 2]

No GPU here: the "device" is the train window's one slot (max_concurrent = 1), so one
item at a time holds it, as one item at a time would own a small GPU. Each item builds
features for prepare_s (a wait) and trains for train_s (a wait) with bench.trainers:staged.
Two real `retrainer run` nights of the same n items, each on a fresh root:

  one stage     [run] two_stage = "off": each item prepares and trains on the device slot
  two stages    [run] two_stage = "on": prepares on prepare_slots CPU slots, the device
                slot only trains (reusing the prepared features)

For each: the makespan (the first attempt's start to the last one's end, from the
ledger), throughput (items per minute over the makespan), the device's busy share
(n × train_s ÷ makespan: the time the device computed, not the time it was held) and the
bound (one stage: n × (prepare_s + train_s); two stages: the larger of the device's
n × train_s and the prepare slots' n × prepare_s ÷ prepare_slots, plus the first prepare).

Prints the table and writes bench/results/two_stage.json.
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
from retrainer.base.artifacts import Layout
from retrainer.ledger.journal import read_ledger


@dataclass(frozen=True)
class Night:
    name: str
    two_stage: str
    makespan_s: float
    items_per_min: float
    device_busy: float  # n × train_s ÷ makespan
    bound_s: float
    attempts: int
    prepare_attempts: int
    reused: int  # items whose train reused the prepared features


def write_config(
    path: Path, symbols_csv: Path, data_dir: Path, root: Path, args: Any, mode: str
) -> Path:
    path.write_text(
        "[run]\n"
        f'mode = "hybrid"\nmax_concurrent = 1\nsymbols = "{symbols_csv}"\n'
        f'retries = 0\nroot = "{root}"\nskip_fresh = false\n'
        f'two_stage = "{mode}"\nprepare_slots = {args.prepare_slots}\n'
        f'[data]\npath = "{data_dir}"\nmin_rows = 1000\n'
        '[trainer]\nplugin = "bench.trainers:staged"\n'
        f"[trainer.params]\nprepare_s = {args.prepare_s}\ntrain_s = {args.train_s}\n"
        '[storage]\nkind = "none"\n'
        '[promote]\nmode = "never"\n'
    )
    return path


def _at(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def measure(root: Path, name: str, mode: str, args: Any, bound_s: float) -> Night:
    layout = Layout(root)
    day = sorted(p.parent.name for p in root.glob("runs/*/status.json"))[-1]
    state = read_ledger(layout.status_path(day), layout.journal_path(day))
    attempts = [a for entry in state.entries.values() for a in entry.attempts if a.ended_at]
    first = min(_at(a.started_at) for a in attempts)
    last = max(_at(str(a.ended_at)) for a in attempts)
    makespan = (last - first).total_seconds()
    reused = sum(1 for e in state.entries.values() if e.metrics and e.metrics.get("reused"))
    return Night(
        name=name,
        two_stage=mode,
        makespan_s=round(makespan, 3),
        items_per_min=round(args.n * 60.0 / makespan, 2),
        device_busy=round(args.n * args.train_s / makespan, 3),
        bound_s=round(bound_s, 3),
        attempts=len(attempts),
        prepare_attempts=sum(1 for a in attempts if a.stage == "prepare"),
        reused=reused,
    )


def run_nights(args: Any, work: Path) -> list[Night]:
    data_dir = work / "data"
    symbols = write_tiny_universe(data_dir, args.n)
    universe = make_universe(work, data_dir, symbols)
    n, p, t, k = args.n, args.prepare_s, args.train_s, args.prepare_slots
    bounds = {"off": n * (p + t), "on": max(n * t, n * p / k) + p}
    nights = []
    for name, mode in (("one stage", "off"), ("two stages", "on")):
        root = work / f"root-{mode}"
        root.mkdir()
        config = write_config(root / "bench.toml", universe.symbols_csv, data_dir, root, args, mode)
        began = time.perf_counter()
        done = subprocess.run(
            retrainer_command(config), env=bench_env(), capture_output=True, text=True, timeout=1800
        )
        if done.returncode != 0:
            raise RuntimeError(f"{name}: retrainer run exited {done.returncode}:\n{done.stderr}")
        night = measure(root, name, mode, args, bounds[mode])
        nights.append(night)
        print(
            f"  {name}: makespan {night.makespan_s:.2f} s, {night.items_per_min:.1f} items/min, "
            f"command {time.perf_counter() - began:.1f} s",
            flush=True,
        )
    return nights


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=12)
    parser.add_argument("--prepare_s", type=float, default=1.0)
    parser.add_argument("--train_s", type=float, default=0.5)
    parser.add_argument("--prepare_slots", type=int, default=2)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    print(
        f"two stages: {args.n} items, prepare {args.prepare_s} s, train {args.train_s} s, "
        f"a device of one slot, {args.prepare_slots} prepare slots",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-two-stage-") as tmp:
        nights = run_nights(args, Path(tmp))
    print_table(
        f"Two stages against one-stage hybrid ({args.n} items, device = 1 slot)",
        ["night", "makespan s", "bound s", "items/min", "device busy", "attempts", "reused"],
        [
            (
                n.name,
                n.makespan_s,
                n.bound_s,
                n.items_per_min,
                f"{n.device_busy:.0%}",
                n.attempts,
                n.reused,
            )
            for n in nights
        ],
    )
    one, two = nights
    speedup = one.makespan_s / two.makespan_s
    print(f"two stages: {speedup:.2f}x the throughput of one stage")
    payload = {
        "items": args.n,
        "prepare_s": args.prepare_s,
        "train_s": args.train_s,
        "prepare_slots": args.prepare_slots,
        "device_slots": 1,
        "nights": [asdict(n) for n in nights],
        "speedup": round(speedup, 3),
    }
    write_results("two_stage", payload, args.results)
    return payload


if __name__ == "__main__":
    main()
