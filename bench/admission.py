"""Memory admission against fixed windows, through the real command.

    python -m bench.admission [--quick]

Eight items whose peak RSS is known and different (each allocates and touches a chosen
amount, then holds it), and a memory budget that fits only some of them at once. The first
night runs them one at a time: it is the "fixed window 1" row and the history the others
plan by. Then, each from a fresh root holding that history:

- admission: `[run] memory_budget_mb` set, a window as large as the queue, and a per-item
  cap `max_memory_mb` above every item's real peak;
- fixed k, capped: a window of k and the cap the budget gives each slot (budget ÷ k, how a
  fixed window stays within the budget today): the larger items are killed (memory limit);
- fixed k, uncapped: a window of k, the generous cap, no admission: nothing is killed, but
  the items that overlap may hold more than the budget (on a machine of that size, the OOM
  killer or swap).

The best fixed window chosen after the fact is the fastest fixed run with no memory-limit
kill and never over the budget. Over the budget is judged by the sum of the ledger's peaks
of the attempts that overlap in time (an upper bound of what they held at once); beside it,
the largest sum of the attempts' processes' RSS sampled every 50 ms, and of all the run's
processes (the zygote and the forks waiting for an item included). Targets: admission
has zero kills, stays within the budget, and its makespan (first start to last end, from
the ledger) is within 1.1x of the best fixed window's.

Prints the table and writes bench/results/admission.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from retrainer.training.contract import TrainContext

# symbol → (MB allocated, seconds held); the largest items also take the longest.
ITEMS: dict[str, tuple[int, float]] = {
    "S00000": (400, 3.0),
    "S00001": (320, 2.5),
    "S00002": (260, 2.0),
    "S00003": (200, 2.0),
    "S00004": (150, 1.5),
    "S00005": (100, 1.5),
    "S00006": (80, 1.0),
    "S00007": (60, 1.0),
}
BUDGET_MB = 600
GENEROUS_CAP_MB = 1000  # above every item's real peak
NO_BUDGET_MB = 1_000_000  # admission never holds anything back
FIXED_WINDOWS = (1, 2, 3, 4)
TARGET_RATIO = 1.1


def hold(ctx: TrainContext) -> dict[str, Any]:
    """The bench's trainer: allocate and touch alloc_mb[symbol] MB, hold it hold_s[symbol]."""
    mb = int(ctx.params["alloc_mb"][ctx.symbol])
    held = bytearray(mb * 2**20)
    for offset in range(0, len(held), 4096):  # resident, not just reserved
        held[offset] = 1
    time.sleep(float(ctx.params["hold_s"][ctx.symbol]))
    (ctx.out_dir / "model.bin").write_bytes(b"m")
    return {"symbol": ctx.symbol, "allocated_mb": mb}


hold.preload_modules = ()  # type: ignore[attr-defined]


def write_config(root: Path, data: Path, scale: float, **run: Any) -> Path:
    alloc = ", ".join(f"{s} = {mb}" for s, (mb, _) in ITEMS.items())
    hold_s = ", ".join(f"{s} = {h * scale:g}" for s, (_, h) in ITEMS.items())
    settings = {"retries": 0, "symbols": ",".join(ITEMS), "root": str(root), **run}
    lines = ["[run]", *(f"{k} = {json.dumps(v)}" for k, v in settings.items())]
    lines += [f"[data]\npath = {json.dumps(str(data))}", '[storage]\nkind = "none"']
    lines += ['[trainer]\nplugin = "bench.admission:hold"']
    lines += [f"[trainer.params]\nalloc_mb = {{ {alloc} }}\nhold_s = {{ {hold_s} }}"]
    path = root / "bench.toml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


class TreeSampler:
    """The RSS of each of a process's descendants, sampled every 50 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[datetime, dict[int, float]]] = []  # when, pid → MB
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import psutil

        try:
            parent = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._done.wait(0.05):
            sample: dict[int, float] = {}
            at = datetime.now(UTC)
            try:
                children = parent.children(recursive=True)
            except psutil.Error:
                break
            for child in children:
                try:
                    sample[child.pid] = child.memory_info().rss / 2**20
                except psutil.Error:
                    continue
            self.samples.append((at, sample))

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def peak_mb(self, attempts: list[dict[str, Any]] | None = None) -> float:
        """The largest summed RSS in one sample: of the attempts' processes while each ran
        its attempt (forked ahead of need, a process waits for its attempt under the pid it
        then runs it with: only that span counts), or of all the run's processes (None)."""
        spans = {a["pid"]: _interval(a) for a in attempts or () if a.get("pid") and a["ended_at"]}
        sums = [
            sum(
                mb
                for pid, mb in sample.items()
                if attempts is None or (pid in spans and spans[pid][0] <= at < spans[pid][1])
            )
            for at, sample in self.samples
        ]
        return max(sums, default=0.0)


def run_night(name: str, config: Path, root: Path) -> dict[str, Any]:
    from bench.retrainer_run import batch_seconds, bench_env, retrainer_command

    process = subprocess.Popen(
        retrainer_command(config),
        env=bench_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    sampler = TreeSampler(process.pid)
    _, stderr = process.communicate(timeout=600)
    sampler.stop()
    status_path = max(root.glob("runs/*/status.json"))  # tonight's, after the history's
    entries = json.loads(status_path.read_text())["symbols"]
    attempts = [a for e in entries.values() for a in e["attempts"]]
    if not attempts:
        raise RuntimeError(f"{name}: nothing ran (exit {process.returncode}):\n{stderr[-2000:]}")
    kills = sum(1 for a in attempts if a.get("error_type") == "MemoryLimit")
    return {
        "name": name,
        "exit_code": process.returncode,
        "makespan_s": round(batch_seconds({"symbols": entries}), 3),
        "memory_limit_kills": kills,
        "succeeded": sum(1 for e in entries.values() if e["state"] == "success"),
        "overlap_peak_mb": round(overlap_peak_mb(attempts), 1),
        # Sampled: the attempts' processes only, and every process of the run.
        "sampled_items_mb": round(sampler.peak_mb(attempts), 1),
        "sampled_all_mb": round(sampler.peak_mb(), 1),
        "most_at_once": most_at_once(attempts),
    }


def _interval(attempt: dict[str, Any]) -> tuple[datetime, datetime]:
    def parse(text: str) -> datetime:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))

    return parse(attempt["started_at"]), parse(attempt["ended_at"])


def _at_each_start(attempts: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """For each attempt's start: the attempts running at that moment (it included)."""
    spans = [(_interval(a), a) for a in attempts if a.get("ended_at")]
    return [[a for (s, e), a in spans if s <= start < e] for (start, _), _ in spans]


def overlap_peak_mb(attempts: list[dict[str, Any]]) -> float:
    """The largest sum of peaks of attempts running at once (checked at each start)."""
    sets = _at_each_start(attempts)
    return max((sum(a.get("peak_rss_mb") or 0.0 for a in s) for s in sets), default=0.0)


def most_at_once(attempts: list[dict[str, Any]]) -> int:
    return max((len(s) for s in _at_each_start(attempts)), default=0)


def as_history(night_root: Path, into: Path) -> None:
    """The first night's ledger, as yesterday's, in another root: its history."""
    (today,) = night_root.glob("runs/*/status.json")
    day = datetime.strptime(today.parent.name, "%Y%m%dZ") - timedelta(days=1)
    target = into / "runs" / day.strftime("%Y%m%dZ")
    target.mkdir(parents=True)
    for name in ("status.json", "ledger.jsonl"):
        if (today.parent / name).exists():
            shutil.copy2(today.parent / name, target / name)


def measure(work: Path, scale: float) -> dict[str, Any]:
    from bench.common import write_tiny_universe

    data = work / "data"
    write_tiny_universe(data, len(ITEMS))
    rows = []

    def night(name: str, with_history: bool, **run: Any) -> dict[str, Any]:
        root = work / name.replace(" ", "-").replace(",", "")
        root.mkdir(parents=True)
        if with_history:
            as_history(work / "fixed-1", root)
        row = run_night(name, write_config(root, data, scale, **run), root)
        print(
            f"  {name:22s} makespan {row['makespan_s']:6.2f} s, kills {row['memory_limit_kills']}, "
            f"overlap peak {row['overlap_peak_mb']:7.1f} MB, at once {row['most_at_once']}",
            flush=True,
        )
        rows.append(row)
        return row

    # The first night: one at a time, the generous cap. The others' history.
    night("fixed 1", False, max_concurrent=1, max_memory_mb=GENEROUS_CAP_MB)
    rows[-1]["window"] = 1
    admission = night(
        "admission",
        True,
        max_concurrent=len(ITEMS),
        max_memory_mb=GENEROUS_CAP_MB,
        memory_budget_mb=BUDGET_MB,
    )
    for k in FIXED_WINDOWS[1:]:
        for capped in (True, False):
            name = f"fixed {k}, {'capped' if capped else 'uncapped'}"
            row = night(
                name,
                True,
                max_concurrent=k,
                max_memory_mb=BUDGET_MB // k if capped else GENEROUS_CAP_MB,
                memory_budget_mb=NO_BUDGET_MB,
            )
            row["window"] = k
    fixed = [r for r in rows if r["name"].startswith("fixed")]
    for row in rows:
        row["over_budget"] = row["overlap_peak_mb"] > BUDGET_MB
    safe = [r for r in fixed if r["memory_limit_kills"] == 0 and not r["over_budget"]]
    best = min(safe, key=lambda r: r["makespan_s"])
    ratio = admission["makespan_s"] / best["makespan_s"]
    return {
        "items": {s: {"alloc_mb": mb, "hold_s": h * scale} for s, (mb, h) in ITEMS.items()},
        "budget_mb": BUDGET_MB,
        "generous_cap_mb": GENEROUS_CAP_MB,
        "runs": rows,
        "best_fixed": best["name"],
        "admission_vs_best_fixed": round(ratio, 3),
        "target_ratio": TARGET_RATIO,
        "met": bool(
            admission["memory_limit_kills"] == 0
            and not admission["over_budget"]
            and admission["succeeded"] == len(ITEMS)
            and ratio <= TARGET_RATIO
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="hold each item half as long")
    args = parser.parse_args()
    from bench.common import print_table, write_results

    scale = 0.5 if args.quick else 1.0
    with tempfile.TemporaryDirectory(prefix="bench-admission-") as tmp:
        result = measure(Path(tmp), scale)
    print_table(
        f"Memory admission: budget {BUDGET_MB} MB, {len(ITEMS)} items of 60-400 MB",
        (
            "run",
            "makespan s",
            "kills",
            "overlap peak MB",
            "sampled items MB",
            "sampled all MB",
            "at once",
            "over budget",
        ),
        [
            (
                r["name"],
                r["makespan_s"],
                r["memory_limit_kills"],
                r["overlap_peak_mb"],
                r["sampled_items_mb"],
                r["sampled_all_mb"],
                r["most_at_once"],
                "yes" if r["over_budget"] else "no",
            )
            for r in result["runs"]
        ],
    )
    print(
        f"admission / best fixed window ({result['best_fixed']}): "
        f"{result['admission_vs_best_fixed']:.2f}x (target <= {TARGET_RATIO}x): "
        f"{'met' if result['met'] else 'NOT met'}"
    )
    write_results("admission", result)
    if not result["met"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
