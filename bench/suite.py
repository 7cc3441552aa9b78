"""`make bench`: retrainer's own cost and scaling beside its peers, in one run.

    python -m bench.suite [--repeats 3] [--systems loky,processpool,dask,ray] [--quick]

Prints the table, writes bench/results/suite.json and bench/results/speedup.png. Every
figure is the median of `repeats` runs, with the min; runs of the configurations being
compared are interleaved (k = 1 then k = 2, and again), so that a busy machine slows
both sides of a ratio alike.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import figures, ledger_scaling, peers
from bench.common import REPO, RESULTS, write_results, write_tiny_universe
from bench.retrainer_run import Universe, dry_run_once, make_universe, run_once
from bench.sizes import QUICK, Sizes
from bench.workloads import SLEEP_S, calibrate_cpu_s


@dataclass
class Measurements:
    sizes: Sizes
    cpu_item_s: float
    retrainer: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)
    ledger_s: dict[str, list[float]] = field(default_factory=dict)
    dry_run_s: list[float] = field(default_factory=list)
    item_start_ms: dict[str, list[float]] = field(default_factory=dict)
    fork_floor_ms: dict[str, list[float]] = field(default_factory=dict)
    sleep_floors: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # top k


def job_key(kind: str, n: int, k: int) -> str:
    return f"{kind}:{n}:k{k}"


# -- retrainer -------------------------------------------------------------------------
def measure_retrainer(
    work: Path, universe: dict[int, Universe], sizes: Sizes, out: Measurements
) -> None:
    for repeat in range(sizes.repeats):
        for kind, n, k in sizes.jobs():
            timing = run_once(work, universe[n], kind, k)
            if timing.succeeded != n:
                raise RuntimeError(f"{kind} n={n} k={k}: {timing.succeeded}/{n} succeeded")
            out.retrainer.setdefault(job_key(kind, n, k), []).append(
                {"command_s": timing.command_s, "batch_s": timing.batch_s}
            )
            print(
                f"  retrainer {kind} n={n} k={k} repeat {repeat + 1}: "
                f"command {timing.command_s:.2f} s, batch {timing.batch_s:.2f} s",
                flush=True,
            )
            if kind == "sleep" and k == sizes.ks_sleep[-1]:  # its floors, side by side
                for name, floor in sleep_floors(work, n, k).items():
                    out.sleep_floors.setdefault(name, []).append(floor)
                    print(
                        f"  {name} floor sleep n={n} k={k}: {floor['efficiency']:.1%}, "
                        f"per item {floor.get('per_item')}",
                        flush=True,
                    )


# Run through -c, as a module's main: nothing of the suite is imported into the floors.
SLEEP_FLOORS = {
    "driver": ["-c", "from bench.driver_floor import main; main()"],
    "process": ["-c", "from bench.process_floor import main; main()"],
    "process_files": ["-c", "from bench.process_floor import main; main()", "--files"],
}


def sleep_floors(work: Path, n: int, k: int) -> dict[str, dict[str, Any]]:
    """Efficiencies (and each process's cost) at the top k: retrainer's local driver alone,
    without the scheduler's bookkeeping (bench/driver_floor.py), and a bare process per
    item, with and without the files an attempt writes (bench/process_floor.py)."""
    return {
        name: _floor_result([sys.executable, *args, "--n", str(n), "--k", str(k)], work)
        for name, args in SLEEP_FLOORS.items()
    }


def measure_dry_run(work: Path, universe: Universe, sizes: Sizes, out: Measurements) -> None:
    for _ in range(sizes.repeats):
        out.dry_run_s.append(dry_run_once(work, universe))
    print(f"  dry run n={universe.n}: {[round(s, 2) for s in out.dry_run_s]} s", flush=True)


def measure_ledger(sizes: Sizes, out: Measurements) -> None:
    for _ in range(sizes.repeats):
        for n in sizes.ledger_symbols:
            out.ledger_s.setdefault(str(n), []).append(
                ledger_scaling.time_updates(n, sizes.ledger_updates)
            )
    print(f"  ledger update s: {out.ledger_s}", flush=True)


def measure_item_start(work: Path, sizes: Sizes, out: Measurements) -> None:
    from bench.item_start import measure_forked

    folder = work / "item-start"
    write_tiny_universe(folder / "data", 1)
    out.item_start_ms = measure_forked(folder, sizes.item_start_n)


def measure_fork_floor(sizes: Sizes, out: Measurements) -> None:
    """Bare processes at the overhead figure's k: the floor under its figure, through
    retrainer's zygote and through multiprocessing's forkserver."""
    for _ in range(sizes.repeats):
        for via in ("zygote", "forkserver"):
            command = [
                sys.executable,
                "-m",
                "bench.fork_floor",
                "--via",
                via,
                "--n",
                str(min(sizes.n_noop, 200)),
                "--k",
                str(sizes.k_noop),
            ]
            result = _floor_result(command)
            out.fork_floor_ms.setdefault(via, []).append(result["per_item_ms"])
    print(f"  fork floor ms/item: {out.fork_floor_ms}", flush=True)


def _floor_result(command: list[str], work: Path | None = None) -> dict[str, Any]:
    """A floor's result; its files go under work, removed with the suite's tree at the
    end (not between two measurements, see driver_floor.py)."""
    env = {**_base_env(), **({"TMPDIR": str(work)} if work else {})}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    line = next((x for x in done.stdout.splitlines() if x.startswith("FLOOR_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"{command[1:3]} exited {done.returncode}:\n{done.stderr}")
    loaded: dict[str, Any] = json.loads(line.removeprefix("FLOOR_RESULT "))
    return loaded


def _base_env() -> dict[str, str]:
    return {
        "PYTHONPATH": str(REPO),
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(Path.home()),
    }


# -- peers -----------------------------------------------------------------------------
def peer_command(system: str, k: int, jobs: Sequence[tuple[str, int]], repeats: int) -> list[str]:
    spec = ",".join(f"{kind}:{n}" for kind, n in jobs)
    command = [
        sys.executable,
        "-m",
        "bench.peers",
        "--system",
        system,
        "--k",
        str(k),
        "--jobs",
        spec,
        "--repeats",
        str(repeats),
    ]
    if system != "ray":
        return command
    # Ray binds the machine's own address otherwise: a private network namespace with only
    # loopback up keeps every byte on this host.
    inner = " ".join(command)
    return ["unshare", "-n", "sh", "-c", f"ip link set lo up && exec {inner}"]


def measure_peers(sizes: Sizes, out: Measurements) -> None:
    by_k: dict[int, list[tuple[str, int]]] = {}
    for kind, n, k in sizes.jobs():
        by_k.setdefault(k, []).append((kind, n))
    for system in sizes.systems:
        note = _unavailable(system)
        if note:
            out.peers[system] = {"skipped": note}
            print(f"  {system}: skipped ({note})", flush=True)
            continue
        runs: dict[str, Any] = {"start_s": {}, "walls": {}}
        for k, jobs in sorted(by_k.items()):
            result = _run_peer(system, k, jobs, sizes.repeats)
            runs["start_s"][str(k)] = result["start_s"]
            for job, walls in result["walls"].items():
                kind, n = job.split(":")
                runs["walls"][job_key(kind, int(n), k)] = walls
            print(
                f"  {system} k={k}: started in {result['start_s']:.2f} s, "
                f"{ {j: [round(w, 2) for w in ws] for j, ws in result['walls'].items()} }",
                flush=True,
            )
        out.peers[system] = runs


def _unavailable(system: str) -> str | None:
    if not peers.available(system):
        return f"{peers.REQUIRES[system]} not installed: pip install -e '.[bench]'"
    if system == "ray" and shutil.which("unshare") is None:
        return "unshare not found: Ray runs only in a private network namespace"
    return None


def _run_peer(system: str, k: int, jobs: Sequence[tuple[str, int]], repeats: int) -> dict[str, Any]:
    env = {**_base_env(), "RAY_AUTH_MODE": "disabled"}
    done = subprocess.run(
        peer_command(system, k, jobs, repeats),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    for line in done.stdout.splitlines():
        if line.startswith("PEER_RESULT "):
            loaded: dict[str, Any] = json.loads(line.removeprefix("PEER_RESULT "))
            return loaded
    raise RuntimeError(f"{system} k={k} exited {done.returncode}:\n{done.stderr[-3000:]}")


# -- the run ---------------------------------------------------------------------------
def run_suite(sizes: Sizes, results_dir: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="retrainer-bench-") as tmp:
        work = Path(tmp)
        counts = sorted({n for _, n, _ in sizes.jobs()} | {sizes.n_dry})
        print(f"writing {counts[-1]} tiny symbols ...", flush=True)
        symbols = write_tiny_universe(work / "data", counts[-1])
        universe = {n: make_universe(work, work / "data", symbols[:n]) for n in counts}
        out = Measurements(sizes, cpu_item_s=calibrate_cpu_s())
        print("retrainer runs ...", flush=True)
        measure_retrainer(work, universe, sizes, out)
        measure_dry_run(work, universe[sizes.n_dry], sizes, out)
        measure_ledger(sizes, out)
        measure_item_start(work, sizes, out)
        measure_fork_floor(sizes, out)
        print("peers ...", flush=True)
        measure_peers(sizes, out)
    raw = {
        "sizes": asdict(sizes),
        "cpu_item_s": out.cpu_item_s,
        "retrainer": out.retrainer,
        "peers": out.peers,
        "ledger_update_s": out.ledger_s,
        "dry_run_s": out.dry_run_s,
        "item_start_ms": out.item_start_ms,
        "fork_floor_ms": out.fork_floor_ms,
        "sleep_floors": out.sleep_floors,
    }
    return report_from_raw(raw, results_dir)


def report_from_raw(
    raw: dict[str, Any], results_dir: Path, meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Figures, table, JSON and chart from the raw walls (also: --report-only)."""
    sizes_raw: dict[str, Any] = {
        k: tuple(v) if isinstance(v, list) else v for k, v in raw["sizes"].items()
    }
    sizes = Sizes(**sizes_raw)
    report = figures.build_report(
        sizes,
        raw["cpu_item_s"],
        SLEEP_S,
        raw["retrainer"],
        raw["peers"],
        raw["ledger_update_s"],
        raw["dry_run_s"],
        raw["item_start_ms"],
        raw["fork_floor_ms"],
        _sleep_floors(raw),
    )
    figures.print_report(report)
    write_results("suite", {"report": report, "raw": raw}, results_dir, meta)
    try:
        from bench.chart import speedup_chart

        print(f"wrote {speedup_chart(report, results_dir / 'speedup.png')}")
    except ImportError:  # matplotlib is in the bench extra
        print("no chart: matplotlib not installed: pip install -e '.[bench]'")
    return report


def _sleep_floors(raw: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    if "sleep_floors" in raw:
        return dict(raw["sleep_floors"])
    # Runs before the process floor kept the driver's efficiencies alone.
    return {"driver": [{"efficiency": e} for e in raw.get("driver_floor", [])]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--systems",
        default=",".join(Sizes.systems),
        help="peers to run, comma-separated; '' for retrainer alone",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild the table, JSON and chart from the raw walls of the "
        "last run's suite.json, measuring nothing",
    )
    args = parser.parse_args()
    if args.report_only:
        previous = json.loads((args.results / "suite.json").read_text())
        report_from_raw(previous["raw"], args.results, previous["meta"])
        return
    base = QUICK if args.quick else Sizes()
    systems = tuple(s for s in args.systems.split(",") if s)
    unknown = set(systems) - set(peers.PEERS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    sizes = Sizes(**{**asdict(base), "repeats": args.repeats, "systems": systems})
    run_suite(sizes, args.results)  # a missed target is reported with its reason, not an error


if __name__ == "__main__":
    main()
