"""OHLCV loading and validation, shared by the plan and the trainer.

One file per symbol: `<data_dir>/<SYMBOL>.parquet` (preferred) or `<SYMBOL>.csv`, with the
columns timestamp, open, high, low, close, volume; extra columns are ignored. Timestamps
are UTC: Parquet may store them tz-aware (any zone) or naive (read as UTC); CSV holds
ISO-8601 text (naive read as UTC, offsets converted). A `DataFormat` reads files that
name their columns otherwise (`[data.columns]`: `timestamp = "date"`, `open = "Open"`…)
or store their times as epoch numbers (`[data] timestamp_unit = "ms"`), as they are.

Every problem raises `DataError(path, problem)` with a one-line problem that names the
first offending row (numbered from 0, as in the DataFrame that `load_ohlcv` returns) and,
once the timestamps are read, that row's time.

Speed matters (the plan reads every candidate file): Parquet is read with pyarrow
directly, only the needed columns, and every check is a vectorised numpy expression.
pandas is imported only where a frame is built or text is parsed: the scheduler checks
files as arrays and need not pay its import (0.45 s of every `retrainer run`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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

# Epoch numbers: nanoseconds per unit of `[data] timestamp_unit`.
EPOCH_UNITS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
_INT64_MAX = 2**63 - 1

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DataFormat:
    """How a folder's files store their bars: each of our columns' name in the files
    (`[data.columns]`; unnamed ones are spelled as ours) and the unit of timestamps stored
    as epoch numbers (`[data] timestamp_unit`; None: epoch numbers are refused)."""

    columns: Mapping[str, str] = field(default_factory=dict)  # ours -> the files'
    timestamp_unit: str | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(OHLCV_COLUMNS))
        if unknown:
            raise ValueError(f"unknown column(s) {', '.join(unknown)}")
        if self.timestamp_unit is not None and self.timestamp_unit not in EPOCH_UNITS:
            raise ValueError(f"unknown timestamp unit {self.timestamp_unit!r}")

    def source(self, name: str) -> str:
        """The files' name for one of our columns."""
        return self.columns.get(name, name)

    def to_dict(self) -> dict[str, object]:
        return {"columns": dict(self.columns), "timestamp_unit": self.timestamp_unit}

    @classmethod
    def from_dict(cls, raw: Mapping[str, object] | None) -> DataFormat:
        if not raw:
            return PLAIN
        columns = raw.get("columns") or {}
        unit = raw.get("timestamp_unit")
        if not isinstance(columns, Mapping):
            raise ValueError(f"columns must be a mapping, not {type(columns).__name__}")
        return cls(
            {str(k): str(v) for k, v in columns.items()}, None if unit is None else str(unit)
        )


PLAIN = DataFormat()  # our column names; timestamps as timestamps or ISO-8601 text


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


def data_values_sha256(timestamps_ns: IntArray, values: Mapping[str, FloatArray]) -> str:
    """sha256 of the bars by value: their UTC nanoseconds (int64), then the OHLCV floats
    row by row. A file rewritten with the same bars (re-encoded, CSV turned Parquet) keeps
    it: the freshness key and the trainer's config.json `data_sha256` are this."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(timestamps_ns, dtype="<i8").tobytes())
    matrix = np.column_stack([np.asarray(values[c], dtype=np.float64) for c in OHLCV_COLUMNS[1:]])
    digest.update(np.ascontiguousarray(matrix, dtype="<f8").tobytes())
    return digest.hexdigest()


def data_fingerprint(path: Path) -> str:
    """sha256 of the file's bytes: identifies the exact data a model was trained on."""
    return sha256_file(path)


# --- loading --------------------------------------------------------------------------


def load_ohlcv(path: Path, min_rows: int, data_format: DataFormat = PLAIN) -> pd.DataFrame:
    """Read and validate one symbol's bars.

    Returns a DataFrame with a RangeIndex, a `timestamp` column (datetime64[ns, UTC]) and
    float64 open/high/low/close/volume (our names, whatever the file calls them), in the
    order stored.
    """
    return _frame(*read_ohlcv(path, min_rows, data_format))


def read_ohlcv(
    path: Path, min_rows: int, data_format: DataFormat = PLAIN
) -> tuple[IntArray, dict[str, FloatArray]]:
    """load_ohlcv's reading and checks without building a DataFrame: UTC nanoseconds and
    float64 columns. The plan checks every file and needs no frame (a third of the cost)."""
    table = read_columns(path, OHLCV_COLUMNS, data_format)
    if table.num_rows == 0:
        raise DataError(path, "no rows (the file holds a header or schema only)")
    timestamps = timestamps_ns(table.column("timestamp"), path, data_format.timestamp_unit)
    values = {name: float_column(table.column(name), name, path) for name in OHLCV_COLUMNS[1:]}
    check_timestamp_order(timestamps, path)
    check_prices(values, path, timestamps)
    check_volume(values["volume"], path, timestamps)
    check_bar_consistency(values, path, timestamps)
    if table.num_rows < min_rows:
        raise DataError(path, f"{table.num_rows} rows, at least {min_rows} needed to train")
    return timestamps, values


def load_tail(
    path: Path,
    days: float,
    columns: Sequence[str] = ("close", "volume"),
    data_format: DataFormat = PLAIN,
) -> pd.DataFrame:
    """The last `days` days of a file as a frame: timestamp plus the columns asked for."""
    timestamps, values = read_tail(path, days, columns, data_format)
    return _frame(timestamps, values)


def read_tail(
    path: Path,
    days: float,
    columns: Sequence[str] = ("close", "volume"),
    data_format: DataFormat = PLAIN,
) -> tuple[IntArray, dict[str, FloatArray]]:
    """The last `days` days of a file (by its latest timestamp), reading only the columns named.

    A light read for ranking many files: the file must be readable, with parsable
    timestamps and numeric columns, but values are not validated (load_ohlcv does that
    for the symbols chosen). Returns UTC nanoseconds and float64 columns, as stored.
    """
    table = read_columns(path, ("timestamp", *columns), data_format)
    if table.num_rows == 0:
        return np.empty(0, np.int64), {name: np.empty(0) for name in columns}
    timestamps = timestamps_ns(table.column("timestamp"), path, data_format.timestamp_unit)
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


def read_columns(path: Path, columns: Sequence[str], data_format: DataFormat = PLAIN) -> pa.Table:
    """Read the named columns of a Parquet or CSV file (each under the name data_format
    gives it in the files), named as ours; name every missing one."""
    size = _file_size(path)
    if size == 0:
        raise DataError(path, "empty file (0 bytes)")
    if path.suffix == ".parquet":
        return _read_parquet(path, columns, data_format)
    if path.suffix == ".csv":
        return _read_csv(path, columns, data_format)
    raise DataError(path, f"unsupported file type {path.suffix!r} (expected .parquet or .csv)")


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise DataError(path, "no such file") from None
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror})") from None


def _read_parquet(path: Path, columns: Sequence[str], data_format: DataFormat) -> pa.Table:
    sources = [data_format.source(name) for name in columns]
    try:
        parquet = pq.ParquetFile(path)
        _check_has_columns(path, parquet.schema_arrow.names, columns, data_format)
        # One thread: pyarrow's pool costs more than it saves on files of this size, and
        # the plan reads a thousand of them in a row.
        table = parquet.read(columns=sources, use_threads=False)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"cannot be read as Parquet ({_one_line(exc)})") from None
    return table.rename_columns(list(columns))


def _read_csv(path: Path, columns: Sequence[str], data_format: DataFormat) -> pa.Table:
    # Timestamps stay text: pandas parses ISO-8601 with mixed offsets where arrow would not
    # (and epoch numbers are parsed from the text, in the configured unit).
    options = pa_csv.ConvertOptions(column_types={data_format.source("timestamp"): pa.string()})
    try:
        table = pa_csv.read_csv(path, convert_options=options)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"cannot be read as CSV ({_one_line(exc)})") from None
    _check_has_columns(path, table.column_names, columns, data_format)
    return table.select([data_format.source(name) for name in columns]).rename_columns(
        list(columns)
    )


def _check_has_columns(
    path: Path, present: Sequence[str], wanted: Sequence[str], data_format: DataFormat
) -> None:
    missing = [
        f"{data_format.source(name)} (data.columns.{name})"
        if data_format.source(name) != name
        else name
        for name in wanted
        if data_format.source(name) not in present
    ]
    if missing:
        found = ", ".join(present) or "none"
        raise DataError(path, f"missing column(s) {', '.join(missing)} (found: {found})")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# --- converting columns -----------------------------------------------------------------


_EPOCH_HINT = 'epoch numbers need [data] timestamp_unit, e.g. "ms"'


def timestamps_ns(column: pa.ChunkedArray, path: Path, unit: str | None = None) -> IntArray:
    """UTC nanoseconds since the epoch, from timestamp, date or ISO-8601 text columns, or
    from epoch numbers (integer, decimal or text) when `unit` (s, ms, us, ns) is given."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _parse_text_timestamps(column, path, unit)
    numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
    if numeric and unit is not None:
        if column.null_count:
            raise DataError(path, f"timestamp at row {_first_true(pc.is_null(column))} is empty")
        if pa.types.is_integer(kind):
            return _epoch_ints_ns(
                _fixed_width_numpy(pc.cast(column, pa.int64()), np.int64), unit, path
            )
        return _epoch_floats_ns(
            _fixed_width_numpy(pc.cast(column, pa.float64()), np.float64), unit, path
        )
    if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        hint = f" ({_EPOCH_HINT})" if numeric else ""
        raise DataError(
            path,
            f"column timestamp has type {kind}; expected timestamps "
            f"or ISO-8601 text such as 2026-01-31T00:00:00Z{hint}",
        )
    if column.null_count:
        row = _first_true(pc.is_null(column))
        raise DataError(path, f"timestamp at row {row} is empty")
    try:
        as_utc = pc.cast(column, _UTC_NS)
    except pa.ArrowInvalid as exc:
        raise DataError(
            path, _out_of_range(column) or f"timestamps out of range ({_one_line(exc)})"
        ) from None
    return _fixed_width_numpy(pc.cast(as_utc, pa.int64()), np.int64)


def _out_of_range(column: pa.ChunkedArray) -> str | None:
    """Name the first timestamp that nanoseconds cannot hold (years 1677 to 2262)."""
    kind = column.type
    per_unit = EPOCH_UNITS.get(getattr(kind, "unit", ""), 0)
    if per_unit <= 1:
        return None
    stored = _fixed_width_numpy(pc.cast(column, pa.int64()), np.int64)
    bad = np.abs(stored) > _INT64_MAX // per_unit
    if not bad.any():
        return None
    row = int(np.argmax(bad))
    return (
        f"timestamps out of range at row {row}: {stored[row]} {kind.unit} since the epoch "
        "(nanoseconds hold the years 1677 to 2262)"
    )


def _parse_text_timestamps(column: pa.ChunkedArray, path: Path, unit: str | None) -> IntArray:
    import pandas as pd

    text = column.to_numpy(zero_copy_only=False)
    if unit is not None and _first_cell_is_a_number(text):
        return _parse_epoch_text(text, path, unit)
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    missing = np.asarray(parsed.isna())
    if missing.any():
        row = int(np.argmax(missing))
        raw = text[row]
        if raw is None or not str(raw).strip():
            raise DataError(path, f"timestamp at row {row} is empty")
        hint = f" ({_EPOCH_HINT})" if _is_number(raw) and unit is None else ""
        raise DataError(path, f"timestamp at row {row} is not an ISO-8601 time ({raw!r}){hint}")
    return np.asarray(parsed.as_unit("ns").asi8, dtype=np.int64)


def _is_number(raw: object) -> bool:
    try:
        float(str(raw).strip())
    except ValueError:
        return False
    return str(raw).strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity")


def _first_cell_is_a_number(text: npt.NDArray[Any]) -> bool:
    """A file's timestamps are epoch numbers or ISO-8601 text: its first cell tells which."""
    first = next((cell for cell in text if cell is not None and str(cell).strip()), None)
    return first is not None and _is_number(first)


def _parse_epoch_text(text: npt.NDArray[Any], path: Path, unit: str) -> IntArray:
    import pandas as pd

    numbers = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce")
    bad = np.asarray(
        numbers.isna() | ~np.isfinite(numbers.to_numpy(dtype=np.float64, na_value=np.nan))
    )
    if bad.any():
        row = int(np.argmax(bad))
        raw = text[row]
        if raw is None or not str(raw).strip():
            raise DataError(path, f"timestamp at row {row} is empty")
        raise DataError(
            path, f"timestamp at row {row} is not a number of {unit} since the epoch ({raw!r})"
        )
    if pd.api.types.is_integer_dtype(numbers.dtype):
        return _epoch_ints_ns(numbers.to_numpy(dtype=np.int64), unit, path)
    return _epoch_floats_ns(numbers.to_numpy(dtype=np.float64), unit, path)


def _epoch_ints_ns(values: IntArray, unit: str, path: Path) -> IntArray:
    per_unit = EPOCH_UNITS[unit]
    _check_epoch_range(np.abs(values.astype(np.float64)), values, unit, path)
    return values * per_unit


def _epoch_floats_ns(values: FloatArray, unit: str, path: Path) -> IntArray:
    """Whole units and their fraction apart: float64 nanoseconds would lose ~100 ns."""
    bad = ~np.isfinite(values)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(path, f"timestamp at row {row} is {_num(values[row])}")
    _check_epoch_range(np.abs(values), values, unit, path)
    per_unit = EPOCH_UNITS[unit]
    whole = np.floor(values)
    fraction_ns = np.rint((values - whole) * per_unit).astype(np.int64)
    return whole.astype(np.int64) * per_unit + fraction_ns


def _check_epoch_range(
    magnitude: FloatArray, values: npt.NDArray[Any], unit: str, path: Path
) -> None:
    # A margin of one unit below the limit: the fraction may round up to the next unit.
    bad = magnitude >= _INT64_MAX // EPOCH_UNITS[unit] - 1
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            path,
            f"timestamp at row {row} ({values[row].item()} {unit} since the epoch) is out of range "
            "(nanoseconds hold the years 1677 to 2262; is timestamp_unit right?)",
        )


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


def check_prices(
    values: dict[str, FloatArray], path: Path, timestamps: IntArray | None = None
) -> None:
    for name in PRICE_COLUMNS:
        column = values[name]
        bad = ~np.isfinite(column) | (column <= 0)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(
                path,
                f"{name} at row {row}{_at(timestamps, row)} is {_num(column[row])} "
                "(prices must be finite and positive)",
            )


def check_volume(volume: FloatArray, path: Path, timestamps: IntArray | None = None) -> None:
    bad = ~np.isfinite(volume) | (volume < 0)
    if bad.any():
        row = int(np.argmax(bad))
        raise DataError(
            path,
            f"volume at row {row}{_at(timestamps, row)} is {_num(volume[row])} "
            "(volume must be finite and not negative)",
        )


def check_bar_consistency(
    values: dict[str, FloatArray], path: Path, timestamps: IntArray | None = None
) -> None:
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
    raise DataError(path, f"inconsistent bar at row {row}{_at(timestamps, row)}: {why} ({prices})")


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


def _at(timestamps: IntArray | None, row: int) -> str:
    """' (2026-01-31T05:00:00Z)': the time of a row, to find it in any tool."""
    return "" if timestamps is None else f" ({_iso(timestamps[row])})"


def _iso(ns: np.int64 | int) -> str:
    import pandas as pd

    return pd.Timestamp(int(ns), unit="ns", tz="UTC").isoformat().replace("+00:00", "Z")
