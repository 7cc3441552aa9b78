"""OHLCV loading and validation, shared by the plan and the trainer.

One file per symbol: `<data_dir>/<SYMBOL>.parquet` (preferred) or `<SYMBOL>.csv`, with the
columns timestamp, open, high, low, close, volume; extra columns are ignored. Timestamps
are UTC: Parquet may store them tz-aware (any zone) or naive (read as UTC); CSV holds
ISO-8601 text (naive read as UTC, offsets converted).

Every problem raises `DataError(path, problem)` with a one-line problem. Rows are
numbered from 0, as in the DataFrame that `load_ohlcv` returns.

Speed matters (the plan reads every candidate file): Parquet is read with pyarrow
directly, only the needed columns, and every check is a vectorised numpy expression.
pandas is imported only where a frame is built or text is parsed: the scheduler checks
files as arrays and need not pay its import (0.45 s of every `retrainer run`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from retrainer.base.artifacts import sha256_file
from retrainer.base.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

OHLCV_COLUMNS = ("timestamp", "open", "high", "low", "close", "volume")
PRICE_COLUMNS = ("open", "high", "low", "close")
# Preferred first: when both files exist, the Parquet one is used.
DATA_SUFFIXES = (".parquet", ".csv")
SYMBOL_PATTERN = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,31}$")
NS_PER_DAY = 86_400 * 10**9
_UTC_NS = pa.timestamp("ns", tz="UTC")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


# --- finding files ------------------------------------------------------------------


def find_data_file(data_dir: Path, symbol: str) -> Path | None:
    """The symbol's data file, Parquet preferred, or None when it has none."""
    for suffix in DATA_SUFFIXES:
        candidate = data_dir / f"{symbol}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def data_files(data_dir: Path) -> dict[str, Path]:
    """Every symbol with a data file, scanned in one pass: symbol -> file (Parquet preferred).

    Only stems that are valid symbols as written (upper case) count; anything else in the
    folder (README.txt, lower-case names, temp files) is ignored.
    """
    found: dict[str, Path] = {}
    try:
        entries = list(os.scandir(data_dir))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        stem, suffix = os.path.splitext(entry.name)
        if suffix not in DATA_SUFFIXES or not SYMBOL_PATTERN.fullmatch(stem):
            continue
        if not entry.is_file():
            continue
        known = found.get(stem)
        if known is None or DATA_SUFFIXES.index(suffix) < DATA_SUFFIXES.index(known.suffix):
            found[stem] = Path(entry.path)
    return found


def list_data_symbols(data_dir: Path) -> list[str]:
    """The symbols that have a data file in data_dir, sorted."""
    return sorted(data_files(data_dir))


def data_fingerprint(path: Path) -> str:
    """sha256 of the file's bytes: identifies the exact data a model was trained on."""
    return sha256_file(path)


# --- loading --------------------------------------------------------------------------


def load_ohlcv(path: Path, min_rows: int) -> pd.DataFrame:
    """Read and validate one symbol's bars.

    Returns a DataFrame with a RangeIndex, a `timestamp` column (datetime64[ns, UTC]) and
    float64 open/high/low/close/volume, in the order stored.
    """
    return _frame(*read_ohlcv(path, min_rows))


def read_ohlcv(path: Path, min_rows: int) -> tuple[IntArray, dict[str, FloatArray]]:
    """load_ohlcv's reading and checks without building a DataFrame: UTC nanoseconds and
    float64 columns. The plan checks every file and needs no frame (a third of the cost)."""
    table = read_columns(path, OHLCV_COLUMNS)
    if table.num_rows == 0:
        raise DataError(path, "no rows (the file holds a header or schema only)")
    timestamps = timestamps_ns(table.column("timestamp"), path)
    values = {name: float_column(table.column(name), name, path) for name in OHLCV_COLUMNS[1:]}
    check_timestamp_order(timestamps, path)
    check_prices(values, path)
    check_volume(values["volume"], path)
    check_bar_consistency(values, path)
    if table.num_rows < min_rows:
        raise DataError(path, f"{table.num_rows} rows, at least {min_rows} needed to train")
    return timestamps, values


def load_tail(
    path: Path, days: float, columns: Sequence[str] = ("close", "volume")
) -> pd.DataFrame:
    """The last `days` days of a file as a frame: timestamp plus the columns asked for."""
    timestamps, values = read_tail(path, days, columns)
    return _frame(timestamps, values)


def read_tail(
    path: Path, days: float, columns: Sequence[str] = ("close", "volume")
) -> tuple[IntArray, dict[str, FloatArray]]:
    """The last `days` days of a file (by its latest timestamp), reading only the columns named.

    A light read for ranking many files: the file must be readable, with parsable
    timestamps and numeric columns, but values are not validated (load_ohlcv does that
    for the symbols chosen). Returns UTC nanoseconds and float64 columns, as stored.
    """
    table = read_columns(path, ("timestamp", *columns))
    if table.num_rows == 0:
        return np.empty(0, np.int64), {name: np.empty(0) for name in columns}
    timestamps = timestamps_ns(table.column("timestamp"), path)
    keep = timestamps > timestamps.max() - int(days * NS_PER_DAY)
    values = {name: float_column(table.column(name), name, path)[keep] for name in columns}
    return timestamps[keep], values


def last_days(frame: pd.DataFrame, days: float) -> pd.DataFrame:
    """The rows of an OHLCV frame within `days` days of its latest timestamp."""
    import pandas as pd

    if frame.empty:
        return frame
    timestamps = frame["timestamp"]
    keep = (timestamps > timestamps.max() - pd.Timedelta(days=days)).to_numpy()
    return frame.iloc[np.flatnonzero(keep)]


def read_columns(path: Path, columns: Sequence[str]) -> pa.Table:
    """Read the named columns of a Parquet or CSV file; name every missing one."""
    size = _file_size(path)
    if size == 0:
        raise DataError(path, "empty file (0 bytes)")
    if path.suffix == ".parquet":
        return _read_parquet(path, columns)
    if path.suffix == ".csv":
        return _read_csv(path, columns)
    raise DataError(path, f"unsupported file type {path.suffix!r} (expected .parquet or .csv)")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror})") from None


def _read_parquet(path: Path, columns: Sequence[str]) -> pa.Table:
    try:
        parquet = pq.ParquetFile(path)
        _check_has_columns(path, parquet.schema_arrow.names, columns)
        # One thread: pyarrow's pool costs more than it saves on files of this size, and
        # the plan reads a thousand of them in a row.
        return parquet.read(columns=list(columns), use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"cannot be read as Parquet ({_one_line(exc)})") from None


def _read_csv(path: Path, columns: Sequence[str]) -> pa.Table:
    # Timestamps stay text: pandas parses ISO-8601 with mixed offsets where arrow would not.
    options = pa_csv.ConvertOptions(column_types={"timestamp": pa.string()})
    try:
        table = pa_csv.read_csv(path, convert_options=options)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"cannot be read as CSV ({_one_line(exc)})") from None
    _check_has_columns(path, table.column_names, columns)
    return table.select(list(columns))


def _check_has_columns(path: Path, present: Sequence[str], wanted: Sequence[str]) -> None:
    missing = [name for name in wanted if name not in present]
    if missing:
        found = ", ".join(present) or "none"
        raise DataError(path, f"missing column(s) {', '.join(missing)} (found: {found})")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- converting columns -----------------------------------------------------------------


def timestamps_ns(column: pa.ChunkedArray, path: Path) -> IntArray:
    """UTC nanoseconds since the epoch, from timestamp, date or ISO-8601 text columns."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _parse_iso_timestamps(column, path)
    if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        raise DataError(
            path,
            f"column timestamp has type {kind}; expected timestamps "
            "or ISO-8601 text such as 2026-01-31T00:00:00Z",
        )
    if column.null_count:
        row = _first_true(pc.is_null(column))
        raise DataError(path, f"timestamp at row {row} is empty")
    try:
        as_utc = pc.cast(column, _UTC_NS)
    except pa.ArrowInvalid as exc:
        raise DataError(path, f"timestamps out of range ({_one_line(exc)})") from None
    return _fixed_width_numpy(pc.cast(as_utc, pa.int64()), np.int64)


def _parse_iso_timestamps(column: pa.ChunkedArray, path: Path) -> IntArray:
    import pandas as pd

    text = column.to_numpy(zero_copy_only=False)
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    missing = np.asarray(parsed.isna())
    if missing.any():
        row = int(np.argmax(missing))
        raw = text[row]
        if raw is None or not str(raw).strip():
            raise DataError(path, f"timestamp at row {row} is empty")
        hint = " (epoch numbers are not accepted)" if str(raw).strip().isdigit() else ""
        raise DataError(path, f"timestamp at row {row} is not an ISO-8601 time ({raw!r}){hint}")
    return np.asarray(parsed.as_unit("ns").asi8, dtype=np.int64)


def float_column(column: pa.ChunkedArray, name: str, path: Path) -> FloatArray:
    """A numeric column as float64; nulls become NaN (caught by the value checks)."""
    kind = column.type
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind)
    if pa.types.is_null(kind):  # a CSV column with no value at all
        return np.full(len(column), np.nan)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _parse_numeric_text(column, name, path)
    if not numeric:
        raise DataError(path, f"column {name} has type {kind}; expected numbers")
    return _fixed_width_numpy(pc.cast(column, pa.float64()), np.float64)


def _fixed_width_numpy(
    column: pa.ChunkedArray, dtype: type[np.int64] | type[np.float64]
) -> npt.NDArray[Any]:
    """The values of an int64 or float64 column, read straight from its Arrow buffers;
    nulls become NaN (float64 only: the int64 callers have refused nulls already).
    pyarrow's own to_numpy() imports pandas, which the scheduler otherwise never needs."""
    width = np.dtype(dtype).itemsize
    parts = []
    for chunk in column.chunks:
        if len(chunk) == 0:
            continue
        validity, data = chunk.buffers()[:2]
        values = np.frombuffer(data, dtype=dtype, count=len(chunk), offset=chunk.offset * width)
        if chunk.null_count:
            bits = np.unpackbits(np.frombuffer(validity, np.uint8), bitorder="little")
            values = np.where(
                bits[chunk.offset : chunk.offset + len(chunk)].astype(bool), values, np.nan
            )
        parts.append(values)
    return np.concatenate(parts) if parts else np.empty(0, dtype)


def _parse_numeric_text(column: pa.ChunkedArray, name: str, path: Path) -> FloatArray:
    import pandas as pd

    text = pd.Series(column.to_numpy(zero_copy_only=False), dtype=object)
    values = pd.to_numeric(text, errors="coerce")
    unparsable = values.isna() & text.notna() & (text.str.strip().str.lower() != "nan")
    if unparsable.any():
        row = int(np.argmax(unparsable.to_numpy()))
        raise DataError(path, f"{name} at row {row} is not a number ({text.iloc[row]!r})")
    return np.asarray(values.to_numpy(dtype=np.float64, na_value=np.nan), dtype=np.float64)


def _first_true(mask: pa.ChunkedArray | pa.Array) -> int:
    return int(np.argmax(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)))


# --- validating values ------------------------------------------------------------------


def check_timestamp_order(timestamps: IntArray, path: Path) -> None:
    """Strictly increasing: name the first row that repeats or goes back in time."""
    steps = np.diff(timestamps)
    bad = steps <= 0
    if not bad.any():
        return
    row = int(np.argmax(bad)) + 1
    before, at = _iso(timestamps[row - 1]), _iso(timestamps[row])
    if steps[row - 1] == 0:
        raise DataError(path, f"duplicate timestamp {at} at rows {row - 1} and {row}")
    raise DataError(path, f"timestamps not increasing at row {row}: {before} then {at}")


def check_prices(values: dict[str, FloatArray], path: Path) -> None:
    for name in PRICE_COLUMNS:
        column = values[name]
        bad = ~np.isfinite(column) | (column <= 0)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                path,
                f"{name} at row {row} is {_num(column[row])} (prices must be finite and positive)",
            )


def check_volume(volume: FloatArray, path: Path) -> None:
    bad = ~np.isfinite(volume) | (volume < 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            path,
            f"volume at row {row} is {_num(volume[row])} (volume must be finite and not negative)",
        )


def check_bar_consistency(values: dict[str, FloatArray], path: Path) -> None:
    """high >= every other price of its bar, low <= every other: name the first bad row."""
    open_, high, low, close = (values[name] for name in PRICE_COLUMNS)
    high_below_low = high < low
    high_below_body = high < np.maximum(open_, close)
    low_above_body = low > np.minimum(open_, close)
    bad = high_below_low | high_below_body | low_above_body
    if not bad.any():
        return
    row = int(np.argmax(bad))
    prices = (
        f"open {_num(open_[row])}, high {_num(high[row])}, "
        f"low {_num(low[row])}, close {_num(close[row])}"
    )
    if high_below_low[row]:
        why = "high < low"
    elif high_below_body[row]:
        why = "high < max(open, close)"
    else:
        why = "low > min(open, close)"
    raise DataError(path, f"inconsistent bar at row {row}: {why} ({prices})")


# --- building the frame --------------------------------------------------------------------


def _frame(timestamps: IntArray, values: dict[str, FloatArray]) -> pd.DataFrame:
    import pandas as pd

    # A view of the nanoseconds as UTC times: pd.to_datetime's conversion machinery cost
    # several times as much, warm and in a fresh fork.
    stamps = pd.DatetimeIndex(timestamps.view("datetime64[ns]")).tz_localize("UTC")
    columns: dict[str, object] = {"timestamp": stamps}
    columns.update(values)
    return pd.DataFrame(columns)


def _num(value: np.floating[Any] | float) -> str:
    return repr(float(value))  # 'nan', '-1.5': not numpy's 'np.float64(-1.5)'


def _iso(ns: np.int64 | int) -> str:
    import pandas as pd

    return pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat().replace("+00:00", "Z")
