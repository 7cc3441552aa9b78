"""One real `retrainer run` in a subprocess, timed: the CLI, plan, ledger, a child process
per item, artifacts with sha256, the summary.

Two walls come back. `command_s` is the whole command, interpreter start to exit: the
figure a cron job pays. `batch_s` runs from the first attempt's hand-over to the last
one's end, read from the ledger: the scheduling itself, comparable to a peer's warm pool
(the forkserver's one-off imports and the first wave's processes, forked before it
starts as a pool is started, are not in it; `command_s` has them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.common import REPO

TRAINERS = {
    "noop": "bench.trainers:noop",
    "cpu": "bench.trainers:cpu",
    "sleep": "bench.trainers:sleep",
}


@dataclass(frozen=True)
class Universe:
    """A data folder and a symbols CSV naming the first n of its symbols."""

    data_dir: Path
    symbols_csv: Path
    n: int


@dataclass(frozen=True)
class RunTiming:
    command_s: float
    batch_s: float
    succeeded: int
    exit_code: int


def make_universe(folder: Path, data_dir: Path, symbols: list[str]) -> Universe:
    folder.mkdir(parents=True, exist_ok=True)
    csv = folder / f"symbols-{len(symbols)}.csv"
    csv.write_text("symbol\n" + "".join(f"{s}\n" for s in symbols))
    return Universe(data_dir, csv, len(symbols))


def write_config(path: Path, universe: Universe, root: Path, kind: str, k: int) -> Path:
    path.write_text(
        "[run]\n"
        f'mode = "hybrid"\nmax_concurrent = {k}\nsymbols = "{universe.symbols_csv}"\n'
        f'retries = 0\nroot = "{root}"\n'
        f'[data]\npath = "{universe.data_dir}"\nmin_rows = 1000\n'
        f'[trainer]\nplugin = "{TRAINERS[kind]}"\n'
        '[storage]\nkind = "none"\n'
    )
    return path


def bench_env(tree: Path = REPO) -> dict[str, str]:
    """tree: the source tree whose retrainer (and bench.trainers) runs; another checkout
    than this one puts its code first on the path, before the installed package."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAINER_")}
    env["PYTHONPATH"] = str(tree)  # the zygote imports bench.trainers
    return env


def retrainer_command(config: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "retrainer", "run", "--config", str(config), *extra]


def run_once(workdir: Path, universe: Universe, kind: str, k: int, tree: Path = REPO) -> RunTiming:
    """A fresh root each time: every symbol runs, none is skipped as done."""
    root = workdir / f"root-{kind}-{universe.n}-{k}-{time.monotonic_ns()}"
    root.mkdir(parents=True)
    config = write_config(root / "bench.toml", universe, root, kind, k)
    began = time.perf_counter()
    done = subprocess.run(
        retrainer_command(config), env=bench_env(tree), capture_output=True, text=True, timeout=3600
    )
    command_s = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"retrainer run exited {done.returncode}:\n{done.stderr[-3000:]}")
    ledger = only_status(root)
    return RunTiming(command_s, batch_seconds(ledger), _count_success(ledger), done.returncode)


def dry_run_once(workdir: Path, universe: Universe, tree: Path = REPO) -> float:
    root = workdir / f"root-dry-{time.monotonic_ns()}"
    root.mkdir(parents=True)
    config = write_config(root / "bench.toml", universe, root, "noop", 2)
    began = time.perf_counter()
    done = subprocess.run(
        retrainer_command(config, "--dry_run"),
        env=bench_env(tree),
        capture_output=True,
        text=True,
        timeout=600,
    )
    elapsed = time.perf_counter() - began
    if done.returncode != 0:
        raise RuntimeError(f"retrainer run --dry_run exited {done.returncode}:\n{done.stderr}")
    return elapsed


def only_status(root: Path) -> dict[str, Any]:
    (status,) = root.glob("runs/*/status.json")
    loaded: dict[str, Any] = json.loads(status.read_text())
    return loaded


def _count_success(ledger: dict[str, Any]) -> int:
    return sum(1 for e in ledger["symbols"].values() if e["state"] == "success")


def batch_seconds(ledger: dict[str, Any]) -> float:
    """First attempt's start to last attempt's end, from the ledger's timestamps."""
    attempts = [a for e in ledger["symbols"].values() for a in e["attempts"]]
    first = min(_parse(a["started_at"]) for a in attempts)
    last = max(_parse(a["ended_at"]) for a in attempts)
    return (last - first).total_seconds()


def _parse(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))
