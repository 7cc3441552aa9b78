"""A backtest of the demo universe: windows per second, and the cost of isolating each
window in its own process against the same work in one process (issue 16).

    python -m bench.backtest_throughput [--symbols 20] [--windows 50] [--days 420]

The same windows (20 symbols × 50 windows of the demo universe, a small MLP so that the
scheduler's share is visible rather than drowned in training) three ways, side by side:

  in-process     one Python process runs 20 single-symbol loops: each symbol's bars read
                 once, each window's TrainContext handed to the trainer in turn (no
                 isolation, no ledger, no checksums; what a notebook would do)
  retrainer k=1  `retrainer backtest --max_concurrent 1`: each window its own process,
                 ledger entry, checksummed folder; one at a time (the like-for-like)
  retrainer k=2  the same with two windows at once (this machine's two cores)

Isolation cost per window = (retrainer k=1 wall − in-process wall) ÷ windows, as the
whole command (plan, zygote, assembly of the forecasts and the report included).
Prints the table and writes bench/results/backtest_throughput.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import print_table, write_results
from bench.retrainer_run import bench_env
from retrainer.base.demo_data import write_demo_universe

PARAMS = {"hidden_sizes": [16], "max_epochs": 8, "patience_epochs": 3, "batch_size": 512}


def write_config(path: Path, data: Path, root: Path, args: argparse.Namespace, k: int) -> Path:
    path.write_text(
        f'[run]\nroot = "{root}"\nsymbols = "all"\nmax_concurrent = {k}\nretries = 0\n'
        f'[data]\npath = "{data}"\n[storage]\nkind = "none"\n'
        "[trainer.params]\n"
        + "".join(f"{key} = {json.dumps(value)}\n" for key, value in PARAMS.items())
        + f"[backtest]\nwindow_bars = {args.window_bars}\nstep_bars = {args.step_bars}\n"
    )
    return path


def run_retrainer(config: Path) -> float:
    began = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "retrainer", "backtest", "--config", str(config)],
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=7200,
    )
    if done.returncode != 0:
        raise RuntimeError(f"retrainer backtest exited {done.returncode}:\n{done.stderr[-3000:]}")
    return time.perf_counter() - began


IN_PROCESS = """
import sys, tempfile, time
from pathlib import Path
from retrainer.base.config import load_settings
from retrainer.base.data import load_ohlcv
from retrainer.plan.backtest import build_backtest_plan
from retrainer.base.resources import detect_resources
from retrainer.base.clock import now_utc
from retrainer.training.contract import TrainContext, load_trainer
from retrainer.engine.worker import _limit_threads

settings = load_settings(Path(sys.argv[1]))
trainer = load_trainer(settings.trainer.plugin)
began = time.perf_counter()
plan = build_backtest_plan(settings, trainer, detect_resources(), now_utc(), True)
_limit_threads(1)
bars = {}
with tempfile.TemporaryDirectory() as scratch:
    for n, item in enumerate(plan.to_run):
        if item.symbol not in bars:
            bars[item.symbol] = load_ohlcv(item.data_path, plan.min_rows)
        out = Path(scratch) / str(n)
        out.mkdir()
        ctx = TrainContext(
            symbol=item.symbol, data_source=lambda s=item.symbol: bars[s], costs=item.costs,
            out_dir=out, seed=item.seed, device="cpu", threads=1, params=plan.trainer_params,
            window=item.window,
        )
        trainer(ctx)
print(len(plan.to_run), time.perf_counter() - began)
"""


def run_in_process(config: Path) -> tuple[int, float]:
    done = subprocess.run(
        [sys.executable, "-c", IN_PROCESS, str(config)],
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=7200,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the in-process loop failed:\n{done.stderr[-3000:]}")
    windows, seconds = done.stdout.split()
    return int(windows), float(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--symbols", type=int, default=20)
    parser.add_argument("--windows", type=int, default=50)
    parser.add_argument("--window_bars", type=int, default=1000)
    parser.add_argument("--step_bars", type=int, default=100)
    args = parser.parse_args()
    days = (args.window_bars + args.windows * args.step_bars) // 24 + 1
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = work / "data"
        write_demo_universe(data, n_symbols=args.symbols, days=days)
        rows: list[list[Any]] = []
        windows, in_process_s = run_in_process(
            write_config(work / "in.toml", data, work / "root-in", args, 1)
        )
        rows.append(
            [
                "in-process (one process, 20 loops)",
                windows,
                in_process_s,
                windows / in_process_s,
                "-",
            ]
        )
        results: dict[str, Any] = {"in_process_s": in_process_s, "windows": windows}
        for k in (1, 2):
            config = write_config(work / f"k{k}.toml", data, work / f"root-{k}", args, k)
            wall = run_retrainer(config)
            cost_ms = (wall - in_process_s) / windows * 1000 if k == 1 else None
            rows.append(
                [f"retrainer backtest k={k}", windows, wall, windows / wall, cost_ms or "-"]
            )
            results[f"retrainer_k{k}_s"] = wall
            if cost_ms is not None:
                results["isolation_ms_per_window"] = cost_ms
                results["isolation_share"] = (wall - in_process_s) / in_process_s
    print_table(
        f"Backtest: {args.symbols} symbols x ~{args.windows} windows "
        f"({args.window_bars} training bars, {args.step_bars} forecast each), small MLP",
        ["how", "windows", "wall s", "windows/s", "isolation ms/window"],
        rows,
    )
    write_results("backtest_throughput", {"args": vars(args), "params": PARAMS, **results})


if __name__ == "__main__":
    main()
