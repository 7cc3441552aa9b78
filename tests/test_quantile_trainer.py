"""The quantile trainer: its params, the pinball math, a nightly run's artifacts, a backtest
window's forecasts, and calibration on data whose quantiles are known."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from retrainer.base.errors import BadInputError
from retrainer.training.contract import TrainContext, load_trainer, validate_trainer_params
from retrainer.training.forecasts import FORECAST_COLUMNS, ForecastWindow
from retrainer.training.quantile import evaluate, load, score_forecasts, train
from retrainer.training.quantile_metrics import (
    central_intervals,
    coverage,
    pinball,
    quantile_scores,
)
from retrainer.training.quantile_model import QuantileMLP
from retrainer.training.quantile_params import QuantileParams
from retrainer.training.splits import SplitError
from tests.support.training_data import EventLog, make_bars, make_context, make_costs

SPEC = "retrainer.training.quantile:train"
QUICK: dict[str, Any] = {
    "hidden_sizes": [8],
    "max_epochs": 5,
    "patience_epochs": 2,
    "batch_size": 128,
    "horizons": [1, 4],
    "embargo_bars": 4,
}
# Enough fitting to learn a scale that moves with the hour; few features, a short warm-up.
CALIBRATED: dict[str, Any] = {
    "hidden_sizes": [16],
    "max_epochs": 60,
    "patience_epochs": 8,
    "batch_size": 256,
    "learning_rate": 0.01,
    "dropout": 0.0,
    "horizons": [1, 4],
    "embargo_bars": 4,
    "return_lags": [1, 4],
    "volatility_windows": [24],
    "volume_window": 24,
}
LEVELS = (0.05, 0.25, 0.5, 0.75, 0.95)


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def hourly_volatility_bars(rows: int, seed: int = 1) -> pd.DataFrame:
    """Log returns ~ N(0, σ(hour)), σ = 1 % × exp(sin(2π·hour/24)): every quantile is a
    known function of the hour features (hour_sin, hour_cos), 7 times wider at 6h than
    at 18h."""
    rng = np.random.default_rng(seed)
    stamps = pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC")
    sigma = 0.01 * np.exp(np.sin(2 * np.pi * stamps.hour.to_numpy() / 24))
    close = 100.0 * np.exp(np.cumsum(sigma * rng.standard_normal(rows)))
    open_ = np.concatenate([[100.0], close[:-1]])
    wiggle = np.abs(rng.normal(0.0, 0.002, rows))
    return pd.DataFrame(
        {
            "timestamp": stamps,
            "open": open_,
            "high": np.maximum(open_, close) * (1 + wiggle),
            "low": np.minimum(open_, close) * (1 - wiggle),
            "close": close,
            "volume": rng.lognormal(10.0, 0.5, rows),
        }
    )


def window_of(
    bars: pd.DataFrame, train_bars: int, embargo: int, end: int | None = None
) -> ForecastWindow:
    """Fit on bars [0, train_bars), forecast from train_bars + embargo to `end` (the last bar)."""
    stamps = bars["timestamp"]
    last = len(bars) - 1 if end is None else end
    first_forecast = train_bars + embargo
    return ForecastWindow(
        index=0,
        train_first=stamps.iloc[0].isoformat(),
        train_last=stamps.iloc[train_bars - 1].isoformat(),
        forecast_first=stamps.iloc[first_forecast].isoformat(),
        forecast_last=stamps.iloc[last].isoformat(),
        embargo_bars=embargo,
        train_bars=train_bars,
        forecast_bars=last - first_forecast + 1,
    )


def backtest_context(
    out_dir: Path, bars: pd.DataFrame, params: dict[str, Any], window: ForecastWindow
) -> TrainContext:
    return replace(make_context(out_dir, bars=bars, params=params), window=window)


def read_forecasts(folder: Path) -> pd.DataFrame:
    return pd.read_parquet(folder / "forecasts.parquet")


@dataclass(frozen=True)
class Backtest:
    bars: pd.DataFrame
    window: ForecastWindow
    metrics: dict[str, Any]
    forecasts: pd.DataFrame
    folder: Path


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> Backtest:
    """One window on 4,000 bars: fit on the first 2,400, forecast the last ~1,600."""
    bars = hourly_volatility_bars(4000)
    window = window_of(bars, 2400, 4)
    folder = tmp_path_factory.mktemp("calibrated")
    metrics = train(backtest_context(folder, bars, CALIBRATED, window))
    return Backtest(bars, window, metrics, read_forecasts(folder), folder)


# --- params -------------------------------------------------------------------------------------


def test_the_defaults_forecast_five_quantiles_over_three_horizons() -> None:
    params = QuantileParams()
    assert params.quantiles == LEVELS and params.horizons == (1, 4, 24)
    assert params.embargo_bars == 24 and params.compute_threads == 1
    features = params.feature_params()
    assert features.horizon_bars == 24 and features.return_lags == params.return_lags


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        ({"quantiles": [0.5, 1.0]}, "quantiles: .*strictly inside \\(0, 1\\)"),
        ({"quantiles": [0.0, 0.5]}, "quantiles: .*strictly inside \\(0, 1\\)"),
        ({"quantiles": [0.75, 0.25]}, "quantiles: .*increasing order"),
        ({"quantiles": [0.25, 0.25, 0.5]}, "quantiles: .*duplicates"),
        ({"quantiles": []}, "quantiles: "),
        ({"horizons": [4, 1]}, "horizons: .*increasing order"),
        ({"horizons": [0, 4]}, "horizons\\.0: "),
        (
            {"horizons": [1, 48]},
            "embargo_bars: .*\\(24\\) must be >= the longest of horizons \\(48\\)",
        ),
        ({"horizons": [1, 4], "embargo_bars": 3}, "embargo_bars: .*\\(3\\) must be >="),
        ({"train_fraction": 0.9}, "fractions must sum to 1"),
        ({"quantile": [0.5]}, "quantile: unknown key"),
    ],
)
def test_bad_params_are_refused_before_anything_starts_naming_the_key(
    bad: dict[str, Any], words: str
) -> None:
    trainer = load_trainer(SPEC)
    with pytest.raises(BadInputError, match="trainer.params") as raised:
        validate_trainer_params(trainer, bad)
    message = str(raised.value)
    assert "\n" not in message
    assert re.search(words, message), message


def test_valid_params_come_back_with_their_defaults() -> None:
    checked = validate_trainer_params(load_trainer(SPEC), {"quantiles": [0.1, 0.5, 0.9]})
    assert checked["quantiles"] == [0.1, 0.5, 0.9] and checked["horizons"] == [1, 4, 24]


def test_importing_the_plugin_does_not_import_torch() -> None:
    code = "import sys, retrainer.training.quantile; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_the_hooks_are_attached_to_train() -> None:
    trainer = load_trainer(SPEC)
    assert getattr(trainer, "params_model", None) is QuantileParams
    assert getattr(trainer, "score_forecasts", None) is score_forecasts
    assert getattr(trainer, "load", None) is load
    assert getattr(trainer, "evaluate", None) is evaluate
    assert callable(getattr(trainer, "prepare", None))
    assert getattr(trainer, "preload_modules", ()) == ("torch", "retrainer.training.quantile_model")


# --- the metrics' arithmetic --------------------------------------------------------------------


def test_pinball_loss_matches_a_hand_computed_example() -> None:
    realised = np.array([2.0, -1.0, 0.5])
    # q = 0.25 against a forecast of 0: 0.25·2, 0.75·1, 0.25·0.5.
    assert pinball(realised, np.zeros(3), 0.25) == pytest.approx((0.5 + 0.75 + 0.125) / 3)
    # q = 0.9 against 1: 0.9·1, 0.1·2, 0.1·0.5.
    assert pinball(realised, np.ones(3), 0.9) == pytest.approx((0.9 + 0.2 + 0.05) / 3)
    assert math.isnan(pinball(np.empty(0), np.empty(0), 0.5))


def test_central_intervals_pair_each_level_with_its_complement() -> None:
    assert central_intervals(LEVELS) == [(0, 4), (1, 3)]
    assert central_intervals((0.1, 0.5, 0.8)) == []
    assert coverage(np.array([0.0, 1.0, 2.0, 3.0]), np.ones(4), np.full(4, 2.0)) == 0.5


def test_scores_report_every_level_and_horizon_and_the_skill_over_the_baseline() -> None:
    levels = (0.25, 0.5, 0.75)
    realised = {1: np.array([0.0, 1.0, -1.0, 0.5])}
    forecast = {1: np.tile([-0.5, 0.0, 0.5], (4, 1))}
    baseline = {1: np.tile([-1.0, 0.0, 1.0], (4, 1))}
    scores = quantile_scores(levels, (1,), realised, forecast, baseline)
    by_hand = np.mean([pinball(realised[1], forecast[1][:, k], q) for k, q in enumerate(levels)])
    base = np.mean([pinball(realised[1], baseline[1][:, k], q) for k, q in enumerate(levels)])
    assert scores["pinball_0.25_h1"] == pytest.approx(pinball(realised[1], np.full(4, -0.5), 0.25))
    assert scores["pinball_mean"] == pytest.approx(by_hand)
    assert scores["baseline_pinball_mean"] == pytest.approx(base)
    assert scores["pinball_skill"] == pytest.approx(1 - by_hand / base)
    assert scores["coverage_0.25_0.75_h1"] == 0.5  # 0.0 and 0.5 lie in [-0.5, 0.5]
    assert scores["baseline_coverage_0.25_0.75_h1"] == 1.0
    assert scores["coverage_nominal_0.25_0.75"] == 0.5
    assert (scores["scored_rows_h1"], scores["crossed_rows"]) == (4, 0)


# --- a nightly item -----------------------------------------------------------------------------

NIGHTLY_KEYS = (
    "symbol",
    "n_train_rows",
    "n_val_rows",
    "n_test_rows",
    "test_bars",
    "epochs_run",
    "best_epoch",
    "best_val_loss",
    "pinball_mean",
    "baseline_pinball_mean",
    "pinball_skill",
    "coverage_0.05_0.95_h1",
    "coverage_0.25_0.75_h4",
    "coverage_nominal_0.05_0.95",
    "coverage_nominal_0.25_0.75",
    *(f"pinball_{q}_h{h}" for q in LEVELS for h in (1, 4)),
)


def _no_nan(text: str) -> None:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in metrics.json")

    json.loads(text, parse_constant=refuse)


def test_a_nightly_run_writes_every_artifact_and_reports_quantile_metrics(tmp_path: Path) -> None:
    events = EventLog()
    metrics = train(make_context(tmp_path, params=QUICK, emit=events))
    for name in (
        "features.parquet",
        "split_indices.json",
        "training_log.json",
        "model.bin",
        "config.json",
        "metrics.json",
    ):
        assert (tmp_path / name).is_file(), name
    text = (tmp_path / "metrics.json").read_text()
    _no_nan(text)
    assert json.loads(text) == metrics
    assert set(NIGHTLY_KEYS) <= set(metrics)
    assert metrics["quantile_crossing"] == "enforced" and metrics["crossed_rows"] == 0
    assert metrics["coverage_nominal_0.05_0.95"] == 0.9
    assert metrics["test_bars"] == metrics["n_test_rows"] == metrics["scored_rows_h4"]
    assert metrics["pinball_skill"] == pytest.approx(
        1 - metrics["pinball_mean"] / metrics["baseline_pinball_mean"]
    )
    assert events.artifacts("coin_partial_saved") == [
        "features.parquet",
        "split_indices.json",
        "training_log.json",
    ]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model"] == "quantile_mlp" and config["params"]["horizons"] == [1, 4]
    assert sorted(config["baseline_quantiles"]) == ["1", "4"]


def test_two_runs_with_the_same_seed_give_identical_bytes(tmp_path: Path) -> None:
    train(make_context(tmp_path / "a", params=QUICK))
    train(make_context(tmp_path / "b", params=QUICK))
    for name in ("metrics.json", "model.bin", "training_log.json", "features.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_a_retry_reuses_the_features_and_the_split(tmp_path: Path) -> None:
    first = train(make_context(tmp_path / "first", params=QUICK))
    events = EventLog()
    second = train(
        make_context(tmp_path / "second", params=QUICK, reuse_dir=tmp_path / "first", emit=events)
    )
    assert events.artifacts("coin_partial_reused") == ["features.parquet", "split_indices.json"]
    assert second == first


def test_a_loaded_model_predicts_ordered_quantiles_up_to_the_latest_bar(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, params=QUICK)
    metrics = train(ctx)
    model = load(tmp_path)
    assert model.metrics == metrics and model.params.horizons == (1, 4)
    predicted = model.predict_quantiles(ctx.data)
    assert predicted.index[-1] == ctx.data["timestamp"].iloc[-1]  # no label needed
    assert list(predicted.columns.names) == ["horizon", "quantile"]
    for h in (1, 4):
        assert (np.diff(predicted[h].to_numpy(), axis=1) >= 0).all()


def test_a_model_evaluated_on_its_own_test_span_reports_its_own_metrics(tmp_path: Path) -> None:
    ctx = make_context(tmp_path, params=QUICK)
    metrics = train(ctx)
    again = evaluate(tmp_path, ctx)
    assert again["evaluated_rows"] == metrics["n_test_rows"]
    for key in ("pinball_mean", "baseline_pinball_mean", "coverage_0.05_0.95_h4", "best_epoch"):
        assert again[key] == pytest.approx(metrics[key]), key


# --- a backtest window --------------------------------------------------------------------------


def test_a_window_writes_forecasts_in_the_schema(tmp_path: Path) -> None:
    bars = make_bars(1500)
    window = window_of(bars, 1000, 4)
    metrics = train(backtest_context(tmp_path, bars, QUICK, window))
    frame = read_forecasts(tmp_path)
    assert list(frame.columns) == [*FORECAST_COLUMNS, "baseline"]
    assert len(frame) == window.forecast_bars * 2 * 5 == metrics["forecast_rows"]
    assert set(frame["model"]) == {"quantile_mlp"} and set(frame["symbol"]) == {"TESTUSDT"}
    assert set(frame["horizon"]) == {1, 4} and sorted(set(frame["quantile"])) == list(LEVELS)
    assert frame["time"].min() == pd.Timestamp(window.forecast_first)
    assert frame["time"].max() == pd.Timestamp(window.forecast_last)
    assert metrics["window"] == "w0000" and metrics["windows"] == 1

    # realised: the log return over h from the bar's close; NaN where t + h is past the data.
    log_close = pd.Series(np.log(bars["close"].to_numpy()), index=bars["timestamp"])
    for h in (1, 4):
        rows = frame[(frame["horizon"] == h) & (frame["quantile"] == 0.5)]
        expected = (log_close.shift(-h) - log_close).loc[rows["time"]].to_numpy()
        np.testing.assert_allclose(rows["realised"].to_numpy(), expected, rtol=0, atol=1e-12)
        assert int(rows["realised"].isna().sum()) == h

    # baseline: one unconditional quantile per (horizon, level), recorded in config.json.
    config = json.loads((tmp_path / "config.json").read_text())
    baseline = frame.groupby(["horizon", "quantile"])["baseline"].agg(["min", "max"])
    assert (baseline["min"] == baseline["max"]).all()
    assert list(baseline["max"].loc[4]) == config["baseline_quantiles"]["4"]
    _no_nan((tmp_path / "metrics.json").read_text())


def test_no_fitted_row_reaches_past_train_last(tmp_path: Path) -> None:
    bars = make_bars(1500)
    window = window_of(bars, 1000, 4)
    metrics = train(backtest_context(tmp_path / "honest", bars, QUICK, window))
    frame = read_forecasts(tmp_path / "honest")
    train_last = pd.Timestamp(window.train_last)
    window_end = frame["window_end"].iloc[0]
    assert window_end <= train_last and window_end < frame["time"].min()
    assert metrics["window_end"] == window_end.isoformat() == train_last.isoformat()

    # Every bar after train_last rewritten: the fitted model is the same, bit for bit.
    altered = bars.copy()
    later = altered["timestamp"] > train_last
    altered.loc[later, ["open", "high", "low", "close"]] *= 1.7
    altered.loc[later, "volume"] *= 3.0
    train(backtest_context(tmp_path / "altered", altered, QUICK, window))
    model = (tmp_path / "honest" / "model.bin").read_bytes()
    assert (tmp_path / "altered" / "model.bin").read_bytes() == model


def test_a_window_too_short_to_fit_is_refused(tmp_path: Path) -> None:
    bars = make_bars(1500)
    with pytest.raises(SplitError, match="too few"):
        train(backtest_context(tmp_path, bars, QUICK, window_of(bars, 175, 4)))


def test_a_window_twice_gives_identical_forecasts(tmp_path: Path) -> None:
    bars = make_bars(1500)
    window = window_of(bars, 1000, 4)
    for name in ("a", "b"):
        train(backtest_context(tmp_path / name, bars, QUICK, window))
    pd.testing.assert_frame_equal(read_forecasts(tmp_path / "a"), read_forecasts(tmp_path / "b"))
    assert (tmp_path / "a" / "metrics.json").read_bytes() == (
        tmp_path / "b" / "metrics.json"
    ).read_bytes()


def test_every_forecast_has_its_quantiles_in_order(calibrated: Backtest) -> None:
    wide = calibrated.forecasts.pivot(
        index=["time", "horizon"], columns="quantile", values="forecast"
    )
    assert (np.diff(wide.to_numpy(), axis=1) > 0).all()
    assert calibrated.metrics["crossed_rows"] == 0


def test_the_head_cannot_cross_whatever_its_weights_and_inputs() -> None:
    torch.manual_seed(0)
    net = QuantileMLP(6, [5], 0.0, n_horizons=3, n_quantiles=7)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 10.0)
        out = net(torch.randn(500, 6) * 100.0)
    assert out.shape == (500, 3, 7)
    assert (out.diff(dim=-1) >= 0).all()


def test_coverage_is_close_to_nominal_and_the_model_beats_the_baseline(
    calibrated: Backtest,
) -> None:
    metrics = calibrated.metrics
    assert metrics["scored_rows_h1"] > 1500
    for h in (1, 4):
        assert metrics[f"coverage_0.05_0.95_h{h}"] == pytest.approx(0.90, abs=0.05), h
        # The scale is predictable from the hour: the conditional quantiles win.
        assert metrics[f"pinball_h{h}"] < metrics[f"baseline_pinball_h{h}"], h
    assert metrics["coverage_0.25_0.75_h1"] == pytest.approx(0.50, abs=0.07)
    assert metrics["pinball_skill"] > 0.03


def test_score_forecasts_gives_the_windows_own_metrics_and_counts_windows(
    calibrated: Backtest, tmp_path: Path
) -> None:
    scored = score_forecasts(calibrated.forecasts, make_costs())
    for key, value in scored.items():
        assert calibrated.metrics[key] == pytest.approx(value), key

    # A second, later window of the same bars: the head concatenates and scores them.
    later = replace(window_of(calibrated.bars, 3200, 4), index=1)
    first = replace(window_of(calibrated.bars, 2400, 4, end=3199), index=0)
    frames = []
    for w in (first, later):
        train(backtest_context(tmp_path / w.name, calibrated.bars, QUICK, w))
        frames.append(read_forecasts(tmp_path / w.name))
    both = score_forecasts(pd.concat(frames, ignore_index=True), make_costs())
    assert both["windows"] == 2
    assert both["forecast_rows"] == sum(len(f) for f in frames)
    known_h4 = sum(int((f["realised"].notna() & (f["horizon"] == 4)).sum()) for f in frames)
    assert both["scored_rows_h4"] == known_h4 // len(LEVELS)
