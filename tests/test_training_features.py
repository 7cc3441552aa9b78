"""Features: only past and current bars, a target that looks exactly horizon bars ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retrainer.training.features import (
    FWD_RET_1,
    FWD_RET_H,
    TARGET,
    TIMESTAMP,
    build_features,
    feature_names,
    feature_rows,
    features_from_parquet,
    features_to_parquet,
    has_direction,
)
from retrainer.training.params import TrainerParams
from tests.support.training_data import make_bars

PARAMS = TrainerParams()


def test_feature_names_cover_every_configured_feature() -> None:
    frame = build_features(make_bars(600), PARAMS)
    assert feature_names(frame) == [
        "ret_1",
        "ret_2",
        "ret_4",
        "ret_8",
        "ret_24",
        "vol_24",
        "vol_168",
        "hl_range",
        "volume_z_168",
        "rsi_14",
        "hour_sin",
        "hour_cos",
    ]
    assert list(frame.columns[:1]) == [TIMESTAMP]
    assert {FWD_RET_1, FWD_RET_H, TARGET} <= set(frame.columns)


def test_rows_without_history_or_future_are_dropped_and_none_is_nan() -> None:
    bars = make_bars(600)
    frame = build_features(bars, PARAMS)
    assert not frame.isna().any().any()
    # vol_168 needs 168 returns, i.e. 169 bars; the last horizon_bars bars have no target.
    assert frame[TIMESTAMP].iloc[0] == bars[TIMESTAMP].iloc[168]
    assert frame[TIMESTAMP].iloc[-1] == bars[TIMESTAMP].iloc[-1 - PARAMS.horizon_bars]
    assert len(frame) == len(bars) - 168 - PARAMS.horizon_bars


@pytest.mark.parametrize("cut", [300, 450, 599])
def test_changing_future_bars_does_not_change_past_feature_rows(cut: int) -> None:
    bars = make_bars(600)
    altered = bars.copy()
    rng = np.random.default_rng(1)
    for column in ("open", "high", "low", "close", "volume"):
        altered.loc[cut:, column] = altered.loc[cut:, column] * rng.uniform(0.5, 2.0, 600 - cut)
    before = build_features(bars, PARAMS)
    after = build_features(altered, PARAMS)
    cut_time = bars[TIMESTAMP].iloc[cut]
    names = feature_names(before)
    past_before = before[before[TIMESTAMP] < cut_time]
    past_after = after[after[TIMESTAMP] < cut_time]
    pd.testing.assert_frame_equal(
        past_before[[TIMESTAMP, *names]], past_after[[TIMESTAMP, *names]], check_exact=True
    )
    # Labels may look ahead, but only horizon_bars: rows whose window ends before the cut agree.
    label_time = bars[TIMESTAMP].iloc[cut - PARAMS.horizon_bars]
    labels = [FWD_RET_1, FWD_RET_H, TARGET]
    pd.testing.assert_frame_equal(
        before[before[TIMESTAMP] < label_time][labels],
        after[after[TIMESTAMP] < label_time][labels],
        check_exact=True,
    )


def test_target_is_the_sign_of_the_forward_return_over_the_horizon() -> None:
    bars = make_bars(400)
    params = TrainerParams(horizon_bars=6, embargo_bars=6)
    frame = build_features(bars, params)
    log_close = np.log(bars.set_index(TIMESTAMP)["close"])
    for i in (0, 50, len(frame) - 1):
        t = frame[TIMESTAMP].iloc[i]
        position = log_close.index.get_loc(t)
        assert isinstance(position, int)
        expected_h = log_close.iloc[position + 6] - log_close.iloc[position]
        assert frame[FWD_RET_H].iloc[i] == pytest.approx(expected_h, abs=1e-12)
        assert frame[FWD_RET_1].iloc[i] == pytest.approx(
            log_close.iloc[position + 1] - log_close.iloc[position], abs=1e-12
        )
        assert frame[TARGET].iloc[i] == int(expected_h > 0)


def test_flat_volume_and_flat_prices_keep_their_rows() -> None:
    bars = make_bars(400)
    bars.loc[100:300, "volume"] = 5.0
    bars.loc[100:300, ["open", "high", "low", "close"]] = 50.0
    frame = build_features(bars, PARAMS)
    assert len(frame) == len(bars) - 168 - PARAMS.horizon_bars
    assert np.isfinite(frame[feature_names(frame)].to_numpy()).all()


def test_hour_features_can_be_left_out() -> None:
    frame = build_features(make_bars(400), TrainerParams(hour_of_day=False))
    assert "hour_sin" not in frame.columns


def test_parquet_round_trip_is_exact() -> None:
    frame = build_features(make_bars(400), PARAMS)
    data = features_to_parquet(frame)
    assert features_to_parquet(frame) == data
    pd.testing.assert_frame_equal(features_from_parquet(data), frame, check_exact=True)


def test_prediction_rows_are_the_feature_rows_plus_the_latest_bars_without_a_target() -> None:
    bars = make_bars(600)
    labelled = build_features(bars, PARAMS)
    rows = feature_rows(bars, PARAMS)
    names = feature_names(labelled)
    assert list(rows.columns) == [TIMESTAMP, *names]
    assert len(rows) == len(labelled) + PARAMS.horizon_bars
    assert rows[TIMESTAMP].iloc[-1] == bars[TIMESTAMP].iloc[-1]
    pd.testing.assert_frame_equal(
        rows.iloc[: len(labelled)], labelled[[TIMESTAMP, *names]], check_exact=True
    )


@pytest.mark.parametrize("cut", [300, 599])
def test_changing_future_bars_does_not_change_past_prediction_rows(cut: int) -> None:
    bars = make_bars(600)
    altered = bars.copy()
    altered.loc[cut:, ["open", "high", "low", "close"]] *= 1.7
    cut_time = bars[TIMESTAMP].iloc[cut]
    before = feature_rows(bars, PARAMS)
    after = feature_rows(altered, PARAMS)
    pd.testing.assert_frame_equal(
        before[before[TIMESTAMP] < cut_time], after[after[TIMESTAMP] < cut_time], check_exact=True
    )


def test_zero_forward_returns_keep_their_rows_but_have_no_direction() -> None:
    bars = make_bars(400)
    bars.loc[250:270, ["open", "high", "low", "close"]] = 50.0
    frame = build_features(bars, PARAMS)
    flat = ~has_direction(frame)
    assert int(flat.sum()) == 21 - PARAMS.horizon_bars
    assert (frame.loc[flat, FWD_RET_H] == 0).all()
    assert len(frame) == len(bars) - 168 - PARAMS.horizon_bars
