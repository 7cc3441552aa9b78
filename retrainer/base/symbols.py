"""Which symbols a run trains: `topN`, `all`, a comma list, or a CSV file.

- `top20` (any case, N >= 1): the symbols with a data file, ranked by median daily quote
  volume (close x volume summed per UTC day) over the last `topn_window_days` days of each
  symbol's own data; highest first, ties by name. Fewer than N available: all of them.
  A file that cannot be read for the ranking stops it (BadInputError naming every such
  file), or, with `skip_unreadable`, is left out of it and named in the selection.
- `all` (any case): every symbol with a data file in the folder, by name.
- `BTCUSDT, ETHUSDT`: a comma list; blanks ignored, duplicates dropped (first kept).
  A single symbol that looks like topN or `all` can be forced as a list with a trailing
  comma (`ALL,`).
- `universe.csv` (or any existing file): a `symbol` column, or else the first column.

Every symbol is upper-cased, must match SYMBOL_PATTERN and must have a data file; every bad
one is named in a single BadInputError.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from retrainer.base.data import (
    DATA_SUFFIXES,
    NS_PER_DAY,
    PLAIN,
    SYMBOL_PATTERN,
    DataFormat,
    data_files,
    read_tail,
)
from retrainer.base.errors import BadInputError, DataError

TOP_N = re.compile(r"top(\d+)", re.IGNORECASE)
ALL = "all"
HEADER_NAME = "symbol"
_MAX_READ_THREADS = 8


@dataclass(frozen=True)
class Selection:
    """The symbols a spec chose, in run order, and what a person should know of how."""

    symbols: list[str]
    # topN and all: how the folder's symbols were chosen ("top3: 3 of the 5 symbols…").
    note: str = ""
    # topN: files left out of the ranking because they cannot be read, symbol -> problem.
    unranked: dict[str, str] = field(default_factory=dict)


def resolve_symbols(spec: str, data_dir: Path, topn_window_days: int = 30) -> list[str]:
    """The symbols named by `spec`, in run order, each with a data file in data_dir."""
    return select_symbols(spec, data_dir, topn_window_days).symbols


def select_symbols(
    spec: str,
    data_dir: Path,
    topn_window_days: int = 30,
    data_format: DataFormat = PLAIN,
    skip_unreadable: bool = False,
) -> Selection:
    """resolve_symbols, saying how the folder's symbols were chosen; with skip_unreadable,
    topN ranks the readable files and names the others instead of refusing the run."""
    spec = spec.strip()
    if spec.lower() == ALL:
        return all_symbols(data_dir)
    top = TOP_N.fullmatch(spec)
    if top:
        return top_symbols(
            int(top.group(1)), data_dir, topn_window_days, data_format, skip_unreadable
        )
    if _names_a_file(spec):
        path = Path(spec).expanduser()
        return Selection(
            validate_symbols(read_symbols_csv(path), data_dir, source=f"symbols file {path}")
        )
    return Selection(validate_symbols(parse_symbol_list(spec), data_dir, source="symbol list"))


def _names_a_file(spec: str) -> bool:
    if spec.lower().endswith(".csv"):
        return True
    try:
        return Path(spec).expanduser().is_file()
    except OSError:  # e.g. a long comma list is "File name too long" as a path
        return False


# --- topN and all ------------------------------------------------------------------------


def top_symbols(
    n: int,
    data_dir: Path,
    window_days: int,
    data_format: DataFormat = PLAIN,
    skip_unreadable: bool = False,
) -> Selection:
    if n < 1:
        raise BadInputError(f"top{n}: N must be at least 1")
    files = _existing_data_files(data_dir)
    volumes, unranked = _median_volumes(files, window_days, data_format)
    if unranked and not (skip_unreadable and volumes):
        why = "not one data file can be read: " if skip_unreadable else ""
        raise BadInputError(
            f"cannot rank symbols by volume: {why}" + "; ".join(sorted(unranked.values()))
        )
    ranked = sorted(volumes, key=lambda symbol: (-_rank_value(volumes[symbol]), symbol))
    chosen = ranked[:n]
    left_out = len(files) - len(chosen)
    note = (
        f"top{n}: {len(chosen)} of the {len(files)} symbols with a data file in {data_dir}, "
        f"{left_out} left out"
    )
    if unranked:
        note += f" ({len(unranked)} of them unreadable, not ranked: {', '.join(sorted(unranked))})"
    return Selection(chosen, note, unranked)


def all_symbols(data_dir: Path) -> Selection:
    files = _existing_data_files(data_dir)
    return Selection(sorted(files), f"all: the {len(files)} symbols with a data file in {data_dir}")


def _median_volumes(
    files: dict[str, Path], window_days: int, data_format: DataFormat
) -> tuple[dict[str, float], dict[str, str]]:
    """Every readable file's median daily quote volume, and why each other one cannot be
    read (symbol -> the file and its problem)."""
    # Threads: pyarrow reads and decompresses with the GIL released.
    workers = min(_MAX_READ_THREADS, os.cpu_count() or 1, len(files))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {
            symbol: pool.submit(median_daily_quote_volume, path, window_days, data_format)
            for symbol, path in files.items()
        }
    volumes: dict[str, float] = {}
    unreadable: dict[str, str] = {}
    for symbol, future in futures.items():
        try:
            volumes[symbol] = future.result()
        except DataError as exc:
            unreadable[symbol] = str(exc)
    return volumes, unreadable


def _existing_data_files(data_dir: Path) -> dict[str, Path]:
    _existing_folder(data_dir)
    files = data_files(data_dir)
    if not files:
        kinds = " or ".join(f"<SYMBOL>{suffix}" for suffix in DATA_SUFFIXES)
        raise BadInputError(f"data folder {data_dir} holds no data file ({kinds})")
    return files


def median_daily_quote_volume(
    path: Path, window_days: int, data_format: DataFormat = PLAIN
) -> float:
    """Median over UTC days (those with bars) of sum(close x volume), last window_days days."""
    timestamps, values = read_tail(path, window_days, ("close", "volume"), data_format)
    if len(timestamps) == 0:
        return math.nan
    days = timestamps // NS_PER_DAY
    quote = values["close"] * values["volume"]
    day_index = days - days.min()
    per_day = np.bincount(day_index, weights=np.nan_to_num(quote, nan=0.0, posinf=0.0))
    traded_days = np.bincount(day_index) > 0
    return float(np.median(per_day[traded_days]))


def _rank_value(volume: float) -> float:
    # Unreadable volume (NaN) ranks last rather than breaking the sort.
    return volume if math.isfinite(volume) else -math.inf


# --- lists and files ---------------------------------------------------------------------


def parse_symbol_list(spec: str) -> list[str]:
    return [part.strip() for part in spec.split(",")]


def read_symbols_csv(path: Path) -> list[str]:
    """The `symbol` column (header any case) or else the first column of a CSV file."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise BadInputError(f"symbols file {path} does not exist") from None
    except OSError as exc:
        raise BadInputError(f"symbols file {path}: cannot be read ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise BadInputError(f"symbols file {path}: not UTF-8 text") from None
    rows = [row for row in csv.reader(io.StringIO(text, newline="")) if _has_content(row)]
    column = 0
    if rows:
        header = [cell.strip().lower() for cell in rows[0]]
        if HEADER_NAME in header:
            column = header.index(HEADER_NAME)
            rows = rows[1:]
    symbols = [row[column].strip() for row in rows if len(row) > column]
    if not any(symbols):
        raise BadInputError(f"symbols file {path} lists no symbols")
    return symbols


def _has_content(row: list[str]) -> bool:
    return any(cell.strip() for cell in row)


# --- validation --------------------------------------------------------------------------


def validate_symbols(raw: Iterable[str], data_dir: Path, source: str) -> list[str]:
    """Upper-case, drop blanks and duplicates, and name every bad symbol at once."""
    symbols = _unique_upper(raw)
    if not symbols:
        raise BadInputError(f"{source}: no symbols given")
    _existing_folder(data_dir)
    files = data_files(data_dir)
    problems = [
        problem for symbol in symbols if (problem := _symbol_problem(symbol, files, data_dir))
    ]
    if problems:
        raise BadInputError(f"{source}: {len(problems)} bad symbol(s): " + "; ".join(problems))
    return symbols


def _existing_folder(data_dir: Path) -> None:
    if data_dir.exists() and not data_dir.is_dir():
        raise BadInputError(f"data folder {data_dir} is a file, not a folder")
    if not data_dir.is_dir():
        raise BadInputError(f"data folder {data_dir} does not exist")


def _unique_upper(raw: Iterable[str]) -> list[str]:
    cleaned = (item.strip().upper() for item in raw)
    return list(dict.fromkeys(item for item in cleaned if item))


def _symbol_problem(symbol: str, files: dict[str, Path], data_dir: Path) -> str | None:
    if not SYMBOL_PATTERN.fullmatch(symbol):
        return (
            f"{symbol!r} is not a valid symbol (1-32 of A-Z 0-9 . _ -, "
            "starting with a letter or digit)"
        )
    if symbol not in files:
        return f"{symbol} has no data file in {data_dir} ({symbol}.parquet or {symbol}.csv)"
    return None
