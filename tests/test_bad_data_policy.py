"""`[data] on_bad`: one bad data file fails its own symbol (named with its file and row),
the others train and the run exits 1; `fail` keeps a bad file stopping the whole run.
Through the real `retrainer` command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import RunCli, read_json, write_config

BAD = "ETHUSDT"
GOOD = ("BTCUSDT", "SOLUSDT")


def data_with_bad_file(tmp_path: Path, small_data: Path, damage: str = "nan") -> Path:
    """small_data's files, with ETHUSDT's damaged as `damage` says."""
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    damage_file(data / f"{BAD}.parquet", damage)
    return data


def damage_file(path: Path, damage: str) -> None:
    if damage == "garbage":
        path.write_bytes(b"PAR1 not parquet at all")
        return
    bars = pd.read_parquet(path)
    if damage == "nan":
        bars.loc[37, "close"] = float("nan")
    elif damage == "duplicate":
        bars["timestamp"] = bars["timestamp"].where(bars.index != 10, bars["timestamp"][9])
    elif damage == "short":
        bars = bars.iloc[:50]
    elif damage == "inverted":
        bars["high"] = bars["high"].where(bars.index != 12, bars["low"][12] / 2)
    else:
        raise ValueError(damage)
    bars.to_parquet(path, index=False)


def config_for(tmp_path: Path, data: Path, symbols: str, **data_keys: Any) -> Path:
    return write_config(
        tmp_path / "retrainer.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": symbols, "retries": 2},
            "data": {"path": str(data), **data_keys},
            "trainer": {
                "plugin": "tests.support.plugins:faulty",
                "params": {"pid_dir": str(tmp_path / "pids")},
            },
        },
    )


def only_day(root: Path, folder: str) -> Path:
    (day,) = sorted((root / folder).iterdir())
    return day


def summary_of(root: Path) -> dict[str, Any]:
    summary: dict[str, Any] = read_json(only_day(root, "summary") / "engine_summary.json")
    return summary


def log_events(root: Path) -> list[dict[str, Any]]:
    lines = (only_day(root, "logs") / "engine.log").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_a_symbol_with_a_nan_bar_fails_alone_naming_file_and_row_and_the_others_train(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    data = data_with_bad_file(tmp_path, small_data)
    config = config_for(tmp_path, data, ",".join([GOOD[0], BAD, GOOD[1]]))
    root = tmp_path / "root"

    result = run_cli("run", "--config", str(config))

    assert result.returncode == 1, result.stdout + result.stderr
    bad_file = data / f"{BAD}.parquet"
    named = f"bad data: {bad_file}: close at row 37 ("
    summary = summary_of(root)
    assert summary["succeeded"] == 2 and summary["failed"] == 1 and summary["exit_code"] == 1
    assert summary["bad_data"] == 1
    item = summary["by_symbol"][BAD]
    assert item["status"] == "failed" and item["attempts"] == 0
    assert item["reason"].startswith(named) and "is nan" in item["reason"]
    assert item["why"] == item["reason"] and item["error_type"] == "DataError"
    assert all(summary["by_symbol"][s]["status"] == "success" for s in GOOD)
    # The final line counts it like any failure and says why.
    assert "2 succeeded, 1 failed" in result.stdout and f"  {BAD}: {named}" in result.stdout
    # The ledger: failed, and no attempt ever started (so none is retried).
    entry = read_json(only_day(root, "runs") / "status.json")["symbols"][BAD]
    assert entry["state"] == "failed" and entry["attempts"] == [] and entry["why"].startswith(named)
    assert not (root / "models" / BAD).exists()
    assert not (only_day(root, "logs") / BAD).exists()
    events = [e for e in log_events(root) if e.get("symbol") == BAD]
    assert [e["event"] for e in events] == ["coin_failed"]
    assert events[0]["attempt"] == 0 and events[0]["will_retry"] is False
    # `status` tells the same story.
    view = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    assert view["done"] == 2 and view["failed"] == 1 and view["total"] == 3
    assert [(f["symbol"], f["attempts"]) for f in view["failures"]] == [(BAD, 0)]
    assert view["failures"][0]["reason"].startswith(named)
    # A flag that names a symbol without a data file is still wrong input: nothing starts.
    wrong = run_cli("run", "--config", str(config), "--force", "--symbols", f"{GOOD[0]},NOPE1")
    assert wrong.returncode == 2 and "NOPE1 has no data file" in wrong.stderr


def test_a_symbol_failed_on_bad_data_trains_once_its_file_is_fixed(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    data = data_with_bad_file(tmp_path, small_data, "duplicate")
    config = config_for(tmp_path, data, f"{GOOD[0]},{BAD}")
    assert run_cli("run", "--config", str(config)).returncode == 1
    shutil.copy(small_data / f"{BAD}.parquet", data / f"{BAD}.parquet")

    again = run_cli("run", "--config", str(config))

    assert again.returncode == 0, again.stdout + again.stderr
    summary = summary_of(tmp_path / "root")
    assert summary["by_symbol"][BAD]["status"] == "success"
    assert summary["by_symbol"][GOOD[0]]["status"] == "skipped"
    assert summary["bad_data"] == 0
    history = json.loads(run_cli("history", BAD, "--json", "--config", str(config)).stdout)
    rows = [(r["attempt"], r["status"]) for r in history["attempts"]]
    assert rows == [(0, "failed"), (1, "success")]
    assert "duplicate timestamp" in history["attempts"][0]["reason"]


@pytest.mark.parametrize(
    ("damage", "named"),
    [
        ("nan", "close at row 37 ("),
        ("duplicate", "duplicate timestamp "),
        ("garbage", "cannot be read as Parquet"),
        ("short", "50 rows, at least 1000 needed to train"),
        ("inverted", "inconsistent bar at row 12 ("),
    ],
)
def test_the_dry_run_shows_each_kind_of_bad_data_as_fail_naming_the_file(
    tmp_path: Path, small_data: Path, run_cli: RunCli, damage: str, named: str
) -> None:
    data = data_with_bad_file(tmp_path, small_data, damage)
    config = config_for(tmp_path, data, "all")

    result = run_cli("run", "--config", str(config), "--dry_run")

    assert result.returncode == 0, result.stderr
    row = next(line for line in result.stdout.splitlines() if line.startswith(BAD))
    assert row.split()[1] == "fail"
    assert f"bad data: {data / (BAD + '.parquet')}: {named}" in row
    assert "4 to run, 0 to skip, 1 to fail on bad data (never started)" in result.stdout
    assert not (tmp_path / "root").exists()


def test_on_bad_fail_keeps_a_bad_file_stopping_the_whole_run(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    data = data_with_bad_file(tmp_path, small_data)
    config = config_for(tmp_path, data, "all", on_bad="fail")

    result = run_cli("run", "--config", str(config))

    assert result.returncode == 2, result.stdout + result.stderr
    assert 'bad data, nothing was started ([data] on_bad = "fail")' in result.stderr
    assert f"{data / (BAD + '.parquet')}: close at row 37 (" in result.stderr
    assert not (tmp_path / "root" / "models").exists()
    # A policy that is neither is wrong config: exit 2, naming the choices.
    wrong = run_cli("run", "--config", str(config), env={"RETRAINER_DATA__ON_BAD": "maybe"})
    assert wrong.returncode == 2
    assert "data.on_bad: Input should be 'skip' or 'fail'" in wrong.stderr


def unreadable_files(data: Path) -> dict[str, str]:
    """Two files that topN cannot read, and what their problem says."""
    (data / "ZZZUSDT.parquet").write_bytes(b"garbage")
    pd.DataFrame({"timestamp": ["2026-01-01"], "close": [1.0]}).to_csv(
        data / "NOVOLUSDT.csv", index=False
    )
    return {
        "ZZZUSDT": f"{data / 'ZZZUSDT.parquet'}: cannot be read as Parquet",
        "NOVOLUSDT": f"{data / 'NOVOLUSDT.csv'}: missing column(s) volume",
    }


def test_top_n_ranks_around_unreadable_files_and_names_them(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    problems = unreadable_files(data)
    config = config_for(tmp_path, data, "top2")

    plan = run_cli("run", "--config", str(config), "--dry_run")

    assert plan.returncode == 0, plan.stderr
    assert (
        f"top2: 2 of the 7 symbols with a data file in {data}, 5 left out "
        "(2 of them unreadable, not ranked: NOVOLUSDT, ZZZUSDT)"
    ) in plan.stdout
    for problem in problems.values():
        assert f"not ranked, unreadable: {problem}" in plan.stdout

    night = run_cli("run", "--config", str(config), "--symbols", "top1")

    assert night.returncode == 0, night.stdout + night.stderr
    root = tmp_path / "root"
    (event,) = [e for e in log_events(root) if e["event"] == "symbols_unranked"]
    assert event["level"] == "warning" and sorted(event["unranked"]) == sorted(problems)
    assert all(problems[s] in event["unranked"][s] for s in problems)
    assert sorted(summary_of(root)["unranked"]) == sorted(problems)


def test_with_on_bad_fail_an_unreadable_file_still_blocks_the_ranking(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    problems = unreadable_files(data)
    config = config_for(tmp_path, data, "top2", on_bad="fail")

    result = run_cli("run", "--config", str(config), "--dry_run")

    assert result.returncode == 2
    assert "cannot rank symbols by volume" in result.stderr
    assert all(problem in result.stderr for problem in problems.values())
