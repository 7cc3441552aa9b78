"""The benchmark suite runs end to end on tiny sizes, so that it cannot rot.

No figure is asserted here: figures come from `make bench`, never from timed tests.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from bench.figures import system_figures
from bench.sizes import Sizes
from bench.suite import run_suite

TINY = Sizes(
    n_noop=4,
    n_cpu=2,
    ks_cpu=(1, 2),
    n_sleep=2,
    ks_sleep=(1, 2),
    ledger_symbols=(10, 50),
    ledger_updates=20,
    n_dry=4,
    item_start_n=2,
    repeats=1,
    systems=("processpool",),
)


def test_the_suite_measures_every_figure_and_writes_json_and_chart(tmp_path: Path) -> None:
    report = run_suite(TINY, tmp_path)

    assert len(report["targets"]) == 5
    assert all(isinstance(t["median"], float) for t in report["targets"])
    retrainer, pool = report["systems"]["retrainer"], report["systems"]["processpool"]
    for system in (retrainer, pool):
        assert set(system) >= {"noop_overhead_ms", "cpu_speedup", "sleep", "isolation"}
    assert retrainer["isolation"].startswith("yes")
    floors = report["sleep_floors"]  # the floors under the sleep figure, same run
    assert set(floors) == {"driver", "process", "process_files"}
    assert floors["driver"]["per_item"]["children_faults"] > 0  # read from the zygote
    written = json.loads((tmp_path / "suite.json").read_text())
    assert written["raw"]["retrainer"]["noop:4:k2"][0]["command_s"] > 0
    if importlib.util.find_spec("matplotlib") is not None:  # the chart is a bench extra
        assert (tmp_path / "speedup.png").read_bytes().startswith(b"\x89PNG")


def test_figures_from_walls_follow_the_definitions() -> None:
    sizes = Sizes(n_noop=100, n_cpu=16, n_sleep=64, ks_sleep=(1, 16))
    walls = {
        "noop:100:k2": [1.0, 2.0, 3.0],
        "cpu:16:k1": [4.0],
        "cpu:16:k2": [2.5],
        "sleep:64:k1": [12.8],
        "sleep:64:k16": [1.0],
    }

    figures = system_figures(walls, sizes, sleep_s=0.2)

    assert figures["noop_overhead_ms"] == {"median": 40.0, "min": 20.0}
    assert figures["cpu_speedup"]["median"] == 1.6
    assert figures["sleep"]["16"]["efficiency"] == 0.8  # 4 waves of 0.2 s in 1.0 s
    assert figures["sleep"]["16"]["speedup"] == 12.8
