"""The makespan bench runs end to end on tiny sizes, so that it cannot rot (its figures
come from `make bench`, never from a timed test)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.makespan import main


def test_the_makespan_bench_runs_three_nights_and_writes_its_figures(tmp_path: Path) -> None:
    args = ["--n", "6", "--k", "2", "--xm_s", "0.02", "--cap_s", "0.2"]
    report = main([*args, "--results", str(tmp_path)])

    names = [night["name"] for night in report["nights"]]
    assert names == ["first night", "second night", "plan order"]
    first, second, _ = report["nights"]
    assert first["forecast_known"] == 0 and second["forecast_known"] == 6
    assert all(night["ratio"] >= 0.99 for night in report["nights"])  # never under the bound
    written = json.loads((tmp_path / "makespan.json").read_text())
    assert written["targets"]["second_night_ratio"]["target"] == 1.05
