"""OHLCV loading: what a valid file gives, and how every kind of bad file is named."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrainer.base.data import (
    data_fingerprint,
    find_data_file,
    last_days,
    list_data_symbols,
    load_ohlcv,
    load_tail,
    read_tail,
)
from retrainer.base.errors import BadInputError, DataError
from tests.conftest import REPO

START = pd.Timestamp("2026-01-01T00:00:00Z")


def make_bars(n: int, start: pd.Timestamp = START, seed: int = 0) -> pd.DataFrame:
    """n consistent hourly bars: a random walk with highs above and lows below the body."""
    rng = np.random.default_rng(seed)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])[:n]
    high = np.maximum(open_, close) * (1.0 + rng.uniform(0.0, 0.005, n))
    low = np.minimum(open_, close) * (1.0 - rng.uniform(0.0, 0.005, n))
    return pd.DataFrame(
        {
            "timestamp": pd.date_range(start, periods=n, freq="1h"),
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "volume": rng.uniform(1.0, 100.0, n),
        }
    )


def write_parquet(path: Path, frame: pd.DataFrame) -> Path:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    return path


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    out = frame.copy()
    if "timestamp" in out and pd.api.types.is_datetime64_any_dtype(out["timestamp"]):
        out["timestamp"] = out["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    out.to_csv(path, index=False)
    return path


def problem_of(path: Path, min_rows: int = 1) -> str:
    """The message of the DataError that loading `path` raises, checked to be one line."""
    with pytest.raises(DataError) as caught:
        load_ohlcv(path, min_rows)
    message = str(caught.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message
    assert isinstance(caught.value, BadInputError)
    return message


# --- valid files ----------------------------------------------------------------------


def test_valid_parquet_loads_with_utc_timestamps_and_float_columns(tmp_path: Path) -> None:
    bars = make_bars(50)
    frame = load_ohlcv(write_parquet(tmp_path / "BTCUSDT.parquet", bars), min_rows=10)
    assert isinstance(frame.index, pd.RangeIndex)
    assert list(frame.columns) == ["timestamp", "open", "high", "low", "close", "volume"]
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert all(frame[c].dtype == np.float64 for c in ["open", "high", "low", "close", "volume"])
    assert frame["timestamp"].iloc[0] == START
    np.testing.assert_array_equal(frame["close"].to_numpy(), bars["close"].to_numpy())


def test_naive_parquet_timestamps_are_read_as_utc(tmp_path: Path) -> None:
    bars = make_bars(20)
    bars["timestamp"] = bars["timestamp"].dt.tz_localize(None)
    frame = load_ohlcv(write_parquet(tmp_path / "X.parquet", bars), min_rows=1)
    assert frame["timestamp"].iloc[0] == START


def test_parquet_timestamps_in_another_zone_are_converted_to_utc(tmp_path: Path) -> None:
    bars = make_bars(20)
    bars["timestamp"] = bars["timestamp"].dt.tz_convert("Asia/Tokyo")
    frame = load_ohlcv(write_parquet(tmp_path / "X.parquet", bars), min_rows=1)
    assert frame["timestamp"].iloc[0] == START
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_microsecond_parquet_timestamps_become_nanoseconds(tmp_path: Path) -> None:
    bars = make_bars(20)
    table = pa.Table.from_pandas(bars, preserve_index=False)
    table = table.set_column(0, "timestamp", table.column("timestamp").cast(pa.timestamp("us")))
    pq.write_table(table, tmp_path / "X.parquet")
    frame = load_ohlcv(tmp_path / "X.parquet", min_rows=1)
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame["timestamp"].iloc[-1] == START + pd.Timedelta(hours=19)


def test_csv_with_iso_timestamps_loads_like_parquet(tmp_path: Path) -> None:
    bars = make_bars(30)
    from_parquet = load_ohlcv(write_parquet(tmp_path / "X.parquet", bars), min_rows=1)
    from_csv = load_ohlcv(write_csv(tmp_path / "X.csv", bars), min_rows=1)
    pd.testing.assert_frame_equal(from_csv, from_parquet, check_exact=False, rtol=1e-12)


def test_csv_timestamps_may_be_naive_or_carry_any_offset(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2026-01-01T00:00:00Z,1,2,0.5,1.5,10\n"
        "2026-01-01 01:00:00,1,2,0.5,1.5,10\n"
        "2026-01-01T03:00:00+01:00,1,2,0.5,1.5,10\n"
        "2026-01-01T03:00:00.000+00:00,1,2,0.5,1.5,10\n"
    )
    frame = load_ohlcv(path, min_rows=1)
    expected = pd.date_range(START, periods=4, freq="1h")
    np.testing.assert_array_equal(frame["timestamp"].to_numpy(), expected.to_numpy())


def test_csv_with_a_bom_and_crlf_line_ends_loads(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_bytes(
        b"\xef\xbb\xbftimestamp,open,high,low,close,volume\r\n"
        b"2026-01-01T00:00:00Z,1,2,0.5,1.5,10\r\n"
        b"2026-01-01T01:00:00Z,1,2,0.5,1.5,10\r\n"
    )
    assert len(load_ohlcv(path, min_rows=2)) == 2


def test_parquet_timestamps_stored_as_iso_text_are_parsed(tmp_path: Path) -> None:
    bars = make_bars(5)
    bars["timestamp"] = bars["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%S+00:00")
    frame = load_ohlcv(write_parquet(tmp_path / "X.parquet", bars), min_rows=1)
    assert frame["timestamp"].iloc[0] == START


def test_extra_columns_are_ignored_and_integer_prices_become_floats(tmp_path: Path) -> None:
    bars = make_bars(10)
    bars["trades"] = 7
    bars["volume"] = np.arange(10, dtype=np.int64)
    frame = load_ohlcv(write_parquet(tmp_path / "X.parquet", bars), min_rows=1)
    assert "trades" not in frame.columns
    assert frame["volume"].dtype == np.float64


def test_zero_volume_is_allowed(tmp_path: Path) -> None:
    bars = make_bars(10)
    bars.loc[3, "volume"] = 0.0
    assert load_ohlcv(write_parquet(tmp_path / "X.parquet", bars), min_rows=1)["volume"][3] == 0


@settings(max_examples=25, deadline=None)
@given(st.lists(st.floats(1e-6, 1e6), min_size=4, max_size=60), st.integers(0, 2**32 - 1))
def test_any_consistent_bars_round_trip_exactly(
    tmp_path_factory: pytest.TempPathFactory, prices: list[float], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    mid = np.array(prices)
    open_, close = mid, mid * rng.uniform(0.5, 2.0, len(mid))
    bars = pd.DataFrame(
        {
            "timestamp": START + pd.to_timedelta(np.cumsum(rng.integers(1, 1000, len(mid))), "s"),
            "open": open_,
            "high": np.maximum(open_, close) * rng.uniform(1.0, 1.1, len(mid)),
            "low": np.minimum(open_, close) * rng.uniform(0.9, 1.0, len(mid)),
            "close": close,
            "volume": rng.uniform(0.0, 1e9, len(mid)),
        }
    )
    path = write_parquet(tmp_path_factory.mktemp("rt") / "X.parquet", bars)
    frame = load_ohlcv(path, min_rows=1)
    np.testing.assert_array_equal(
        frame[["open", "high", "low", "close", "volume"]].to_numpy(),
        bars[["open", "high", "low", "close", "volume"]].to_numpy(),
    )


def test_loading_is_vectorised_a_100k_row_file_loads_in_well_under_a_second(
    tmp_path: Path,
) -> None:
    path = write_parquet(tmp_path / "X.parquet", make_bars(100_000))
    load_ohlcv(path, min_rows=1)
    started = time.perf_counter()
    load_ohlcv(path, min_rows=1)
    assert time.perf_counter() - started < 0.25  # about 10 ms; a per-row loop takes seconds


# --- unreadable files ---------------------------------------------------------------------


def test_missing_file_is_named(tmp_path: Path) -> None:
    assert "no such file" in problem_of(tmp_path / "NOPE.parquet")


def test_zero_byte_file_is_reported_empty(tmp_path: Path) -> None:
    path = tmp_path / "X.parquet"
    path.write_bytes(b"")
    assert "empty file" in problem_of(path)


def test_corrupt_parquet_is_reported_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "X.parquet"
    path.write_bytes(b"PAR1 this is not really parquet at all")
    assert "cannot be read as Parquet" in problem_of(path)


def test_truncated_parquet_is_reported_unreadable(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "X.parquet", make_bars(100))
    path.write_bytes(path.read_bytes()[:-200])
    assert "cannot be read as Parquet" in problem_of(path)


def test_csv_with_a_ragged_row_is_reported_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_text("timestamp,open,high,low,close,volume\n2026-01-01T00:00:00Z,1,2\n")
    assert "cannot be read as CSV" in problem_of(path)


def test_unsupported_file_type_is_named(tmp_path: Path) -> None:
    path = tmp_path / "X.json"
    path.write_text("{}")
    assert "unsupported file type '.json'" in problem_of(path)


def test_file_with_a_header_only_has_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_text("timestamp,open,high,low,close,volume\n")
    assert "no rows" in problem_of(path)


def test_parquet_with_a_schema_only_has_no_rows(tmp_path: Path) -> None:
    assert "no rows" in problem_of(write_parquet(tmp_path / "X.parquet", make_bars(0)))


def test_missing_columns_are_all_named(tmp_path: Path) -> None:
    bars = make_bars(10).drop(columns=["high", "volume"])
    message = problem_of(write_parquet(tmp_path / "X.parquet", bars))
    assert "missing column(s) high, volume" in message
    assert "found: timestamp, open, low, close" in message


def test_missing_csv_columns_are_all_named(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "X.csv", make_bars(10).drop(columns=["timestamp", "low"]))
    assert "missing column(s) timestamp, low" in problem_of(path)


# --- timestamps ----------------------------------------------------------------------------


def test_unparsable_timestamp_names_the_row_and_the_text(tmp_path: Path) -> None:
    bars = write_csv(tmp_path / "X.csv", make_bars(10)).read_text().splitlines()
    bars[4] = "yesterday" + bars[4][bars[4].index(",") :]
    path = tmp_path / "X.csv"
    path.write_text("\n".join(bars) + "\n")
    assert "timestamp at row 3 is not an ISO-8601 time ('yesterday')" in problem_of(path)


def test_epoch_seconds_in_csv_are_rejected_with_a_hint(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_text("timestamp,open,high,low,close,volume\n1767225600,1,2,0.5,1.5,10\n")
    message = problem_of(path)
    assert "row 0 is not an ISO-8601 time ('1767225600')" in message
    assert 'epoch numbers need [data] timestamp_unit, e.g. "ms"' in message


def test_empty_timestamp_cell_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2026-01-01T00:00:00Z,1,2,0.5,1.5,10\n,1,2,0.5,1.5,10\n"
    )
    assert "timestamp at row 1 is empty" in problem_of(path)


def test_null_parquet_timestamp_names_the_row(tmp_path: Path) -> None:
    bars = make_bars(5)
    bars.loc[2, "timestamp"] = pd.NaT
    assert "timestamp at row 2 is empty" in problem_of(write_parquet(tmp_path / "X.parquet", bars))


def test_numeric_parquet_timestamps_are_rejected_by_type(tmp_path: Path) -> None:
    bars = make_bars(5)
    bars["timestamp"] = np.arange(5) * 3600
    message = problem_of(write_parquet(tmp_path / "X.parquet", bars))
    assert "column timestamp has type int64; expected timestamps" in message
    assert "epoch numbers need [data] timestamp_unit" in message


def test_timestamps_going_back_name_the_row_and_both_times(tmp_path: Path) -> None:
    bars = make_bars(10)
    bars.loc[6, "timestamp"] = START + pd.Timedelta(hours=2, minutes=30)
    message = problem_of(write_parquet(tmp_path / "X.parquet", bars))
    assert (
        "timestamps not increasing at row 6: 2026-01-01T05:00:00Z then 2026-01-01T02:30:00Z"
    ) in message


def test_duplicate_timestamp_is_named(tmp_path: Path) -> None:
    bars = make_bars(10)
    bars.loc[4, "timestamp"] = START + pd.Timedelta(hours=3)  # the same as row 3
    message = problem_of(write_parquet(tmp_path / "X.parquet", bars))
    assert "duplicate timestamp 2026-01-01T03:00:00Z at rows 3 and 4" in message


def test_timestamps_out_of_the_nanosecond_range_are_reported(tmp_path: Path) -> None:
    table = pa.table(
        {
            "timestamp": pa.array([0, 10**12], pa.timestamp("s")),
            **{name: pa.array([1.0, 1.0]) for name in ["open", "high", "low", "close", "volume"]},
        }
    )
    pq.write_table(table, tmp_path / "X.parquet")
    assert "timestamps out of range at row 1: " in problem_of(tmp_path / "X.parquet")


# --- values --------------------------------------------------------------------------------


@pytest.mark.parametrize("column", ["open", "high", "low", "close"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, 0.0, -1.0])
def test_bad_price_names_the_column_and_the_first_bad_row(
    tmp_path: Path, column: str, bad: float
) -> None:
    bars = make_bars(10)
    bars.loc[[5, 8], column] = bad
    message = problem_of(write_parquet(tmp_path / "X.parquet", bars))
    assert (
        f"{column} at row 5 (2026-01-01T05:00:00Z) is {bad!r} (prices must be finite and positive)"
    ) in message


def test_empty_csv_price_cell_is_reported_as_nan(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_text("timestamp,open,high,low,close,volume\n2026-01-01T00:00:00Z,1,2,0.5,,10\n")
    assert "close at row 0 (2026-01-01T00:00:00Z) is nan" in problem_of(path)


def test_price_text_that_is_not_a_number_names_the_row(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        "2026-01-01T00:00:00Z,1,2,0.5,1.5,10\n2026-01-01T01:00:00Z,1,2,0.5,n/a?,10\n"
    )
    assert "close at row 1 is not a number ('n/a?')" in problem_of(path)


@pytest.mark.parametrize("bad", [-0.5, np.nan, np.inf])
def test_bad_volume_names_the_first_bad_row(tmp_path: Path, bad: float) -> None:
    bars = make_bars(10)
    bars.loc[7, "volume"] = bad
    message = problem_of(write_parquet(tmp_path / "X.parquet", bars))
    assert f"volume at row 7 (2026-01-01T07:00:00Z) is {bad!r}" in message


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"high": 90.0, "low": 95.0, "open": 92.0, "close": 93.0}, "high < low"),
        ({"high": 100.0, "low": 90.0, "open": 95.0, "close": 101.0}, "high < max(open, close)"),
        ({"high": 100.0, "low": 96.0, "open": 95.0, "close": 99.0}, "low > min(open, close)"),
    ],
)
def test_inconsistent_bar_names_the_first_bad_row_and_why(
    tmp_path: Path, change: dict[str, float], why: str
) -> None:
    bars = make_bars(10)
    for row in (4, 6):
        for column, value in change.items():
            bars.loc[row, column] = value
    message = problem_of(write_parquet(tmp_path / "X.parquet", bars))
    assert f"inconsistent bar at row 4 (2026-01-01T04:00:00Z): {why}" in message


def test_too_few_rows_says_how_many_are_needed(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "X.parquet", make_bars(40))
    assert problem_of(path, min_rows=1000).endswith("40 rows, at least 1000 needed to train")


def test_a_corrupt_value_is_reported_before_the_row_count(tmp_path: Path) -> None:
    bars = make_bars(40)
    bars.loc[1, "close"] = -3.0
    assert "close at row 1 (2026-01-01T01:00:00Z)" in problem_of(
        write_parquet(tmp_path / "X.parquet", bars), 1000
    )


# --- finding files and fingerprints --------------------------------------------------------


def test_find_data_file_prefers_parquet_over_csv(tmp_path: Path) -> None:
    write_csv(tmp_path / "BTCUSDT.csv", make_bars(3))
    assert find_data_file(tmp_path, "BTCUSDT") == tmp_path / "BTCUSDT.csv"
    write_parquet(tmp_path / "BTCUSDT.parquet", make_bars(3))
    assert find_data_file(tmp_path, "BTCUSDT") == tmp_path / "BTCUSDT.parquet"
    assert find_data_file(tmp_path, "ETHUSDT") is None


def test_list_data_symbols_gives_upper_case_stems_sorted_once(tmp_path: Path) -> None:
    for name in [
        "SOLUSDT.parquet",
        "BTCUSDT.csv",
        "BTCUSDT.parquet",
        "ETH-PERP.csv",
        "btc_lower.parquet",
        "README.txt",
        ".SOLUSDT.parquet.abc.tmp",
        "notes.csv",
    ]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "DIRECTORY.parquet").mkdir()
    assert list_data_symbols(tmp_path) == ["BTCUSDT", "ETH-PERP", "SOLUSDT"]


def test_list_data_symbols_of_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert list_data_symbols(tmp_path / "nope") == []


def test_data_fingerprint_is_the_sha256_of_the_file_bytes(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "X.parquet", make_bars(10))
    assert data_fingerprint(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    before = data_fingerprint(path)
    write_parquet(path, make_bars(11))
    assert data_fingerprint(path) != before


# --- tails ---------------------------------------------------------------------------------


def test_read_tail_keeps_only_the_last_days_of_the_columns_asked_for(tmp_path: Path) -> None:
    bars = make_bars(24 * 10)
    path = write_parquet(tmp_path / "X.parquet", bars)
    timestamps, values = read_tail(path, days=2, columns=("close",))
    assert list(values) == ["close"]
    assert len(timestamps) == 48
    np.testing.assert_array_equal(values["close"], bars["close"].to_numpy()[-48:])
    tail = load_tail(path, days=2)
    assert list(tail.columns) == ["timestamp", "close", "volume"]
    assert tail["timestamp"].iloc[0] == bars["timestamp"].iloc[-48]


def test_read_tail_names_a_missing_column(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "X.parquet", make_bars(10).drop(columns=["volume"]))
    with pytest.raises(DataError, match="missing column"):
        read_tail(path, days=30)


def test_last_days_of_a_frame_counts_back_from_its_latest_bar(tmp_path: Path) -> None:
    frame = load_ohlcv(write_parquet(tmp_path / "X.parquet", make_bars(24 * 5)), min_rows=1)
    assert len(last_days(frame, 1)) == 24
    assert len(last_days(frame, 30)) == 24 * 5
    assert last_days(frame.iloc[:0], 1).empty


def test_the_plans_read_of_a_file_with_nulls_never_imports_pandas(tmp_path: Path) -> None:
    # pandas costs every `retrainer run` 0.45 s of imports; the scheduler reads arrays only.
    bars = pd.DataFrame(
        {
            "timestamp": pd.date_range("2026-01-01", periods=4, freq="h", tz="UTC"),
            "open": [1.0, 1.0, 1.0, 1.0],
            "high": [2.0, 2.0, None, 2.0],
            "low": [0.5, 0.5, 0.5, 0.5],
            "close": [1.5, 1.5, 1.5, 1.5],
            "volume": [3.0, 3.0, 3.0, 3.0],
        }
    )
    path = tmp_path / "NULLS.parquet"
    pq.write_table(pa.Table.from_pandas(bars, preserve_index=False).slice(1), path)
    probe = (
        "import sys\nfrom pathlib import Path\nfrom retrainer.base.data import read_columns, "
        "float_column, timestamps_ns\n"
        f"table = read_columns(Path({str(path)!r}), ['timestamp', 'high'])\n"
        f"print(float_column(table.column('high'), 'high', Path('x')).tolist(), "
        "timestamps_ns(table.column('timestamp'), Path('x'))[:1].tolist(), "
        "'pandas' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.stdout.split() == ["[2.0,", "nan,", "2.0]", "[1767229200000000000]", "False"]
