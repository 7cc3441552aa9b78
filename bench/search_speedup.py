"""Speedup of a parameter search (issue 16, part 3): the same search at k = 1 and k = 2.

    python -m bench.search_speedup [--days 760] [--max_epochs 12] [--batch_size 64]

One demo symbol, the default trainer, a [search] grid of 16 candidates (hidden_sizes x
learning_rate x dropout x weight_decay) at a moderate size, so each candidate trains for a
few seconds. Two real `retrainer run` nights, each on a fresh root, measured side by side:

  k = 1    --mode sequential: one candidate at a time
  k = 2    --max_concurrent 2: two candidates at a time

For each: the command's wall time, the makespan (the first attempt's start to the last
one's end, from the ledger), and the candidate the search chose. Parallel must equal
serial: both choose the same candidate, and every candidate's metrics.json is byte for
byte the same (the candidates of a symbol share its seed, and the default trainer fits with
one compute thread). Prints the table and writes bench/results/search_speedup.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import RESULTS, print_table, write_results
from bench.retrainer_run import batch_seconds, bench_env, only_status, retrainer_command
from retrainer.base.artifacts import Layout
from retrainer.base.demo_data import write_demo_universe
from retrainer.ledger.journal import read_ledger

SPACE = {
    "hidden_sizes": [[32], [64, 32]],
    "learning_rate": [0.0005, 0.002],
    "dropout": [0.0, 0.1],
    "weight_decay": [0.0, 0.0001],
}
NIGHTS = (("k = 1", 1, ("--mode", "sequential")), ("k = 2", 2, ("--max_concurrent", "2")))


@dataclass(frozen=True)
class Night:
    name: str
    k: int
    wall_s: float  # the command, from start to exit
    makespan_s: float  # the first attempt's start to the last one's end
    candidates: int
    chosen: str | None
    best_metric: float | None


def write_config(path: Path, data_dir: Path, symbol: str, root: Path, args: Any) -> Path:
    path.write_text(
        "[run]\n"
        f'symbols = "{symbol}"\nretries = 0\nroot = "{root}"\nskip_fresh = false\n'
        f'[data]\npath = "{data_dir}"\n'
        f"[trainer.params]\nmax_epochs = {args.max_epochs}\n"
        f"patience_epochs = {args.patience_epochs}\nbatch_size = {args.batch_size}\n"
        '[storage]\nkind = "none"\n'
        "[search]\nenabled = true\nbudget = 16\n"
        + "".join(f"space.{key} = {json.dumps(values)}\n" for key, values in SPACE.items())
    )
    return path


def run_night(work: Path, data_dir: Path, symbol: str, args: Any, spec: Any) -> Night:
    name, k, flags = spec
    root = work / f"root-k{k}"
    root.mkdir()
    config = write_config(root / "bench.toml", data_dir, symbol, root, args)
    began = time.perf_counter()
    done = subprocess.run(
        retrainer_command(config, *flags),
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=3600,
    )
    wall_s = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"{name}: retrainer run exited {done.returncode}:\n{done.stderr}")
    ledger = only_status(root)
    (record_path,) = root.glob(f"runs/*/search/{symbol}.json")
    record = json.loads(record_path.read_text())
    night = Night(
        name,
        k,
        round(wall_s, 2),
        round(batch_seconds(ledger), 2),
        len(ledger["symbols"]),
        record["chosen"],
        record["best_metric"],
    )
    print(f"  {name}: wall {night.wall_s:.1f} s, chose {night.chosen}", flush=True)
    return night


def metrics_by_candidate(root: Path) -> dict[str, bytes]:
    layout = Layout(root)
    day = sorted(p.parent.name for p in root.glob("runs/*/status.json"))[-1]
    state = read_ledger(layout.status_path(day), layout.journal_path(day))
    return {
        item_id: (root / str(e.artifact_dir) / "metrics.json").read_bytes()
        for item_id, e in state.entries.items()
        if e.artifact_dir
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=760)
    # Without early stopping (patience = max_epochs) every candidate trains its epochs: a
    # few seconds each, so the figure is the search's, not the processes' start.
    parser.add_argument("--max_epochs", type=int, default=12)
    parser.add_argument("--patience_epochs", type=int, default=12)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    print(
        f"search speedup: 16 candidates of the default trainer, one symbol of {args.days} "
        f"days of hourly bars, max_epochs {args.max_epochs}; {os.cpu_count()} cores",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        work = Path(tmp)
        data_dir = work / "data"
        write_demo_universe(data_dir, n_symbols=1, days=args.days)
        symbol = sorted(p.stem for p in data_dir.glob("*.parquet"))[0]
        nights = [run_night(work, data_dir, symbol, args, spec) for spec in NIGHTS]
        serial, parallel = (metrics_by_candidate(work / f"root-k{k}") for k in (1, 2))
    identical = serial == parallel and len(serial) == 16
    one, two = nights
    speedup = one.wall_s / two.wall_s
    print_table(
        f"Parameter search, 16 candidates on {symbol} (default trainer)",
        ["night", "wall s", "makespan s", "candidates", "chosen", "best_val_loss"],
        [(n.name, n.wall_s, n.makespan_s, n.candidates, n.chosen, n.best_metric) for n in nights],
    )
    same = one.chosen == two.chosen and identical
    print(
        f"k = 2: {speedup:.2f}x the speed of k = 1 (makespan "
        f"{one.makespan_s / two.makespan_s:.2f}x); same candidate and byte-identical "
        f"metrics.json: {'yes' if same else 'NO'}"
    )
    payload = {
        "symbol": symbol,
        "days": args.days,
        "max_epochs": args.max_epochs,
        "patience_epochs": args.patience_epochs,
        "batch_size": args.batch_size,
        "space": SPACE,
        "nights": [asdict(n) for n in nights],
        "speedup_wall": round(speedup, 3),
        "speedup_makespan": round(one.makespan_s / two.makespan_s, 3),
        "same_candidate": one.chosen == two.chosen,
        "identical_metrics": identical,
    }
    write_results("search_speedup", payload, args.results)
    return payload


if __name__ == "__main__":
    main()
