"""`retrainer backtest`: walk-forward windows as items, their forecasts, resume, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from retrainer.base.config import BacktestSettings
from retrainer.ledger.journal import read_ledger
from retrainer.plan.backtest import NoWindow, cut_windows
from retrainer.training.forecasts import FORECAST_COLUMNS
from tests.conftest import TINY_TRAINER, RunCli, cli_env, write_config
from tests.support.processes import assert_all_dead

HOURLY_NS = 3_600 * 10**9
BACKTEST = {"window_bars": 1500, "step_bars": 500}


def _config(
    tmp_path: Path,
    data: Path,
    plugin: str | None = None,
    params: dict[str, Any] | None = None,
    **backtest: Any,
) -> Path:
    sections: dict[str, dict[str, Any]] = {
        "run": {"root": str(tmp_path / "root"), "symbols": "BTCUSDT,ETHUSDT", "max_concurrent": 2},
        "data": {"path": str(data)},
        "trainer": {"plugin": plugin} if plugin else {},
        "trainer.params": params or TINY_TRAINER,
        "backtest": {**BACKTEST, **backtest},
    }
    return write_config(tmp_path / "backtest.toml", {k: v for k, v in sections.items() if v})


def _home(tmp_path: Path) -> Path:
    return tmp_path / "root" / "backtests" / "walkforward"


def _summary(tmp_path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((_home(tmp_path) / "backtest_summary.json").read_text())
    return loaded


def _ledger(tmp_path: Path) -> dict[str, Any]:
    loaded: dict[str, dict[str, Any]] = json.loads((_home(tmp_path) / "status.json").read_text())
    return loaded["symbols"]


def _successes(journal: Path) -> int:
    if not journal.exists():
        return 0
    entries = read_ledger(journal.with_name("status.json"), journal).entries
    return sum(1 for e in entries.values() if e.state.value == "success")


# -- windows ------------------------------------------------------------------------------
def test_rolling_windows_step_through_the_data_and_never_train_past_their_forecasts() -> None:
    times = np.arange(1000, dtype=np.int64) * HOURLY_NS
    config = BacktestSettings(window_bars=300, step_bars=100, embargo_bars=5)
    windows = cut_windows(times, config)
    assert [w.forecast_first for w in windows][:2] == [
        pd.Timestamp(305 * HOURLY_NS, tz="UTC")
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
        pd.Timestamp(405 * HOURLY_NS, tz="UTC")
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z"),
    ]
    assert len(windows) == 7  # origins 305, 405, ..., 905; the last forecasts 95 bars
    assert windows[-1].forecast_bars == 95
    for window in windows:
        assert window.train_bars == 300
        gap = pd.Timestamp(window.forecast_first) - pd.Timestamp(window.train_last)
        assert gap == pd.Timedelta(hours=6)  # the embargo's 5 bars left out, then the forecast


def test_expanding_windows_keep_their_first_bar_and_refit_every_n_steps_forecasts_longer() -> None:
    times = np.arange(1000, dtype=np.int64) * HOURLY_NS
    config = BacktestSettings(mode="expanding", window_bars=300, step_bars=100, refit_every=2)
    windows = cut_windows(times, config)
    assert {w.train_first for w in windows} == {windows[0].train_first}
    assert [w.train_bars for w in windows] == [300, 500, 700, 900][: len(windows)]
    assert all(w.forecast_bars == 200 for w in windows[:-1])


def test_start_and_end_bound_the_forecasts_and_too_little_data_says_why() -> None:
    times = np.arange(1000, dtype=np.int64) * HOURLY_NS
    start = pd.Timestamp(600 * HOURLY_NS, tz="UTC").to_pydatetime()
    end = pd.Timestamp(799 * HOURLY_NS, tz="UTC").to_pydatetime()
    windows = cut_windows(
        times, BacktestSettings(window_bars=300, step_bars=100, start=start, end=end)
    )
    assert len(windows) == 2
    assert pd.Timestamp(windows[-1].forecast_last) == pd.Timestamp(end)
    with pytest.raises(NoWindow, match="too little data for one window: 1000 bars"):
        cut_windows(times, BacktestSettings(window_bars=1000, step_bars=100))


# -- the real command ---------------------------------------------------------------------
def test_a_backtest_writes_out_of_sample_forecasts_per_symbol_and_scores_them(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    result = run_cli("backtest", "--config", str(_config(tmp_path, small_data)))
    assert result.returncode == 0, result.stderr
    summary = _summary(tmp_path)
    assert summary["complete"] and set(summary["symbols"]) == {"BTCUSDT", "ETHUSDT"}
    ledger = _ledger(tmp_path)
    for symbol, record in summary["symbols"].items():
        assert record["windows_done"] == record["windows_total"] >= 3
        forecasts = pd.read_parquet(tmp_path / "root" / record["forecasts"])
        assert list(forecasts.columns[: len(FORECAST_COLUMNS)]) == list(FORECAST_COLUMNS)
        assert str(forecasts["time"].dt.tz) == "UTC" and forecasts["quantile"].isna().all()
        assert (
            forecasts["time"].is_monotonic_increasing and not forecasts["time"].duplicated().any()
        )
        assert (forecasts["window_end"] < forecasts["time"]).all()
        assert forecasts["forecast"].between(0, 1).all()
        for window in record["windows"]:
            first, last = (
                pd.Timestamp(window["forecast_first"]),
                pd.Timestamp(window["forecast_last"]),
            )
            rows = forecasts[forecasts["time"].between(first, last)]
            assert len(rows) and (rows["window_end"] <= pd.Timestamp(window["train_last"])).all()
            entry = ledger[f"{symbol}/{window['window']}"]
            assert entry["state"] == "success" and entry["symbol"] == symbol
            config = json.loads(
                (tmp_path / "root" / entry["artifact_dir"] / "config.json").read_text()
            )
            last_label = pd.Timestamp(config["fit_rows"]["last_label_bar"])
            assert (
                last_label
                <= pd.Timestamp(window["train_last"])
                < pd.Timestamp(window["forecast_first"])
            )
        metrics = record["metrics"]
        assert metrics["scored_rows"] > 0 and metrics["windows"] == record["windows_total"]
        for key in (
            "accuracy_edge",
            "accuracy_edge_se",
            "majority_rate",
            "net_sharpe",
            "net_sharpe_se",
        ):
            assert key in metrics
    assert (_home(tmp_path) / "report.html").read_text().count("<img") == 2
    assert "walk-forward" in result.stdout


def test_a_dry_run_shows_the_windows_and_the_estimate_and_writes_nothing(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = _config(tmp_path, small_data)
    result = run_cli("backtest", "--config", str(config), "--dry_run", "--verbose")
    assert result.returncode == 0, result.stderr
    assert "BTCUSDT/w0000" in result.stdout and "not done yet" in result.stdout
    assert "forecast: finishes at" in result.stdout
    assert not (tmp_path / "root").exists()


def test_a_killed_backtest_resumes_with_only_its_unfinished_windows(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = _config(tmp_path, small_data, plugin="tests.support.backtest_plugins:slow")
    pid_dir = tmp_path / "pids"
    env = cli_env({"RETRAINER_TEST_WINDOW_SLEEP_S": "1.0", "RETRAINER_TEST_PID_DIR": str(pid_dir)})
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "retrainer", "backtest", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    journal = _home(tmp_path) / "ledger.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _successes(journal) < 2:
        time.sleep(0.1)
    scheduler.send_signal(signal.SIGKILL)
    scheduler.wait(timeout=30)
    assert_all_dead([int(p.read_text()) for p in pid_dir.glob("*.pid")])
    before = read_ledger(_home(tmp_path) / "status.json", journal).entries
    finished = {k: e.artifact_dir for k, e in before.items() if e.state.value == "success"}
    assert 2 <= len(finished) < 8

    result = run_cli(
        "backtest", "--config", str(config), env={"RETRAINER_TEST_WINDOW_SLEEP_S": "0"}
    )
    assert result.returncode == 0, result.stderr
    ledger = _ledger(tmp_path)
    for item_id, folder in finished.items():  # done before the kill: not run again
        assert ledger[item_id]["artifact_dir"] == folder and len(ledger[item_id]["attempts"]) == 1
    assert _summary(tmp_path)["complete"]

    again = run_cli(
        "backtest", "--config", str(config), "--force", env={"RETRAINER_TEST_WINDOW_SLEEP_S": "0"}
    )
    assert again.returncode == 0, again.stderr
    redone = _ledger(tmp_path)
    assert all(redone[item_id]["artifact_dir"] != folder for item_id, folder in finished.items())


def test_a_window_that_fails_fails_alone_and_the_summary_names_it(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = _config(
        tmp_path, small_data, plugin="tests.support.backtest_plugins:fails_on_third_window"
    )
    result = run_cli("backtest", "--config", str(config), "--retries", "0")
    assert result.returncode == 1
    summary = _summary(tmp_path)
    assert not summary["complete"]
    for record in summary["symbols"].values():
        assert record["windows_done"] == record["windows_total"] - 1
        assert any("w0002" in m and "blew up" in m for m in record["missing"])
        assert record["metrics"]["windows"] == record["windows_total"] - 1


def test_a_symbol_with_too_little_data_is_skipped_with_its_reason(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        bars = pd.read_parquet(small_data / f"{symbol}.parquet")
        (bars if symbol == "BTCUSDT" else bars.iloc[:1200]).to_parquet(data / f"{symbol}.parquet")
    result = run_cli("backtest", "--config", str(_config(tmp_path, data)))
    assert result.returncode == 0, result.stderr
    summary = _summary(tmp_path)
    assert set(summary["symbols"]) == {"BTCUSDT"}
    assert "too little data for one window: 1200 bars" in summary["skipped"]["ETHUSDT"]


@pytest.mark.parametrize(
    ("backtest", "named"),
    [
        ({"step_bars": 0}, "backtest.step_bars"),
        ({"start": "2026-10-01", "end": "2026-09-01"}, "backtest.start"),
        ({"window_bars": 100_000}, "backtest.window_bars"),
    ],
)
def test_bad_backtest_settings_exit_2_naming_the_key_before_anything_starts(
    tmp_path: Path, small_data: Path, run_cli: RunCli, backtest: dict[str, Any], named: str
) -> None:
    result = run_cli("backtest", "--config", str(_config(tmp_path, small_data, **backtest)))
    assert result.returncode == 2
    assert named in result.stderr
    assert not (_home(tmp_path) / "status.json").exists()


def test_a_rerun_with_other_settings_must_say_force(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    assert run_cli("backtest", "--config", str(_config(tmp_path, small_data))).returncode == 0
    changed = _config(tmp_path, small_data, step_bars=400)
    result = run_cli("backtest", "--config", str(changed))
    assert result.returncode == 2 and "--force" in result.stderr
    assert run_cli("backtest", "--config", str(changed), "--force").returncode == 0


def test_the_zygote_reads_each_symbols_bars_once_for_all_its_windows(
    tmp_path: Path, small_data: Path
) -> None:
    from retrainer.engine import worker

    path = small_data / "BTCUSDT.parquet"
    assert worker.preload_bars([(path, 10, {})]) == 1
    assert worker.preload_bars([(path, 10, {})]) == 0  # already held
    os.utime(path)  # the file replaced (a new mtime): read again
    assert worker.preload_bars([(path, 10, {})]) == 1
    worker.PRELOADED_BARS.clear()


def test_the_quantile_trainer_backtests_with_one_row_per_quantile_and_horizon(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    params = {**TINY_TRAINER, "quantiles": [0.1, 0.5, 0.9], "horizons": [1, 4], "embargo_bars": 24}
    config = _config(tmp_path, small_data, "retrainer.training.quantile:train", params)
    result = run_cli("backtest", "--config", str(config), "--symbols", "BTCUSDT")
    assert result.returncode == 0, result.stderr
    record = _summary(tmp_path)["symbols"]["BTCUSDT"]
    forecasts = pd.read_parquet(tmp_path / "root" / record["forecasts"])
    assert set(forecasts["quantile"]) == {0.1, 0.5, 0.9} and set(forecasts["horizon"]) == {1, 4}
    per_time = forecasts.groupby(["time", "horizon"])["forecast"]
    assert per_time.apply(lambda v: v.is_monotonic_increasing).all()  # never crossing
    assert (forecasts["window_end"] < forecasts["time"]).all()
    metrics = record["metrics"]
    assert 0.5 < metrics["coverage_0.1_0.9_h1"] < 1.0 and metrics["coverage_nominal_0.1_0.9"] == 0.8
    assert metrics["pinball_mean"] > 0 and "baseline_pinball_mean" in metrics


def test_a_backtest_never_passes_for_a_night_with_the_nights_monitors(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    from tests.support.http_server import RecordingServer

    server = RecordingServer().start()
    try:
        config = _config(tmp_path, small_data, step_bars=1500)
        text = config.read_text() + (
            f'\n[healthchecks]\nping_url = "{server.url}/ping/nightly"\n'
            f'[prometheus]\ntextfile = "{tmp_path / "night.prom"}"\n'
        )
        config.write_text(text)
        result = run_cli("backtest", "--config", str(config))
        assert result.returncode == 0, result.stderr
        assert server.requests == []  # the nightly check is not pinged by a backtest
        assert not (tmp_path / "night.prom").exists()
        assert run_cli("run", "--config", str(config), "--symbols", "BTCUSDT").returncode == 0
        assert [r.path for r in server.wait_for(2)] == ["/ping/nightly/start", "/ping/nightly"]
    finally:
        server.stop()


def test_a_symbol_whose_bars_changed_has_its_windows_run_again_and_the_others_are_kept(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    for symbol in ("BTCUSDT", "ETHUSDT"):
        pd.read_parquet(small_data / f"{symbol}.parquet").to_parquet(data / f"{symbol}.parquet")
    config = _config(tmp_path, data)
    assert run_cli("backtest", "--config", str(config)).returncode == 0
    before = {k: e["artifact_dir"] for k, e in _ledger(tmp_path).items()}
    bars = pd.read_parquet(data / "BTCUSDT.parquet")
    prices = ["open", "high", "low", "close"]
    bars.loc[10, prices] = bars.loc[10, prices].to_numpy(np.float64) * 1.01  # a vendor's fix
    bars.to_parquet(data / "BTCUSDT.parquet")
    planned = run_cli("backtest", "--config", str(config), "--dry_run", "--verbose")
    assert "its bounds or its symbol's data changed since it was done" in planned.stdout
    assert run_cli("backtest", "--config", str(config)).returncode == 0
    after = {k: e["artifact_dir"] for k, e in _ledger(tmp_path).items()}
    for item_id, folder in before.items():
        assert (after[item_id] != folder) == item_id.startswith("BTCUSDT/")


def test_before_any_window_is_done_the_estimate_scales_each_symbols_nightly_time(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = _config(tmp_path, small_data)
    assert run_cli("run", "--config", str(config)).returncode == 0  # the nights' history
    planned = run_cli("backtest", "--config", str(config), "--dry_run")
    assert planned.returncode == 0, planned.stderr
    assert "windows' history); before a window is done: each symbol's nightly time" in (
        planned.stdout
    )
