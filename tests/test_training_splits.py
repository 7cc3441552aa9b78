"""Walk-forward split: ordered, disjoint spans, embargoed by at least the horizon."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from retrainer.training.splits import SplitError, WalkForwardSplit, walk_forward_split


def hourly(rows: int) -> pd.Series:
    return pd.Series(pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC"))


def test_default_fractions_cut_train_val_test_in_time_order() -> None:
    split = walk_forward_split(hourly(1048), (0.70, 0.15, 0.15), horizon_bars=4, embargo_bars=24)
    assert (split.train.start, split.train.stop) == (0, 700)
    assert (split.val.start, split.val.stop) == (724, 874)
    assert (split.test.start, split.test.stop) == (898, 1048)
    assert split.train.first_timestamp == "2024-01-01T00:00:00.000Z"
    assert split.val.first_timestamp == "2024-01-31T04:00:00.000Z"


@given(
    rows=st.integers(min_value=60, max_value=5000),
    train_fraction=st.floats(min_value=0.1, max_value=0.8),
    horizon=st.integers(min_value=1, max_value=12),
    extra_embargo=st.integers(min_value=0, max_value=12),
)
def test_spans_are_ordered_disjoint_and_embargoed(
    rows: int, train_fraction: float, horizon: int, extra_embargo: int
) -> None:
    val_fraction = (1 - train_fraction) / 2
    fractions = (train_fraction, val_fraction, 1 - train_fraction - val_fraction)
    timestamps = hourly(rows)
    embargo = horizon + extra_embargo
    try:
        split = walk_forward_split(timestamps, fractions, horizon, embargo)
    except SplitError:
        return
    train, val, test = split.train, split.val, split.test
    assert 0 == train.start < train.stop <= val.start < val.stop <= test.start < test.stop == rows
    assert val.start - train.stop >= horizon and test.start - val.stop >= horizon
    # The last training row's target window (horizon bars ahead) ends before validation.
    assert train.stop - 1 + horizon < val.start
    first_val_time = timestamps.iloc[val.start]
    assert (timestamps.iloc[train.start : train.stop] < first_val_time).all()
    assert (timestamps.iloc[val.start : val.stop] < timestamps.iloc[test.start]).all()


def test_too_few_rows_is_a_split_error() -> None:
    with pytest.raises(SplitError, match="too few"):
        walk_forward_split(hourly(50), (0.7, 0.15, 0.15), horizon_bars=4, embargo_bars=24)


def test_an_embargo_shorter_than_the_horizon_is_refused() -> None:
    with pytest.raises(SplitError, match="embargo_bars"):
        walk_forward_split(hourly(1000), (0.7, 0.15, 0.15), horizon_bars=8, embargo_bars=4)


def test_split_round_trips_through_json() -> None:
    split = walk_forward_split(hourly(1000), (0.7, 0.15, 0.15), horizon_bars=4, embargo_bars=24)
    assert WalkForwardSplit.from_json_bytes(split.to_json_bytes()) == split
    assert split.to_dict()["test"]["rows"] == split.test.rows
