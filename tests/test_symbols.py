"""Symbol specs: topN by recent quote volume, comma lists and CSV files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retrainer.base.errors import BadInputError
from retrainer.base.symbols import median_daily_quote_volume, resolve_symbols

END = pd.Timestamp("2026-06-01T00:00:00Z")


def write_symbol(
    data_dir: Path,
    symbol: str,
    daily_quote: list[float] | float,
    days: int = 40,
    end: pd.Timestamp = END,
) -> Path:
    """Hourly bars at price 2.0 whose quote volume sums to daily_quote[d] on day d."""
    quotes = np.broadcast_to(np.asarray(daily_quote, dtype=float), (days,))
    timestamps = pd.date_range(end=end - pd.Timedelta(hours=1), periods=days * 24, freq="1h")
    price = np.full(days * 24, 2.0)
    table = pa.table(
        {
            "timestamp": pa.array(timestamps),
            "open": price,
            "high": price * 1.01,
            "low": price * 0.99,
            "close": price,
            "volume": np.repeat(quotes / 24.0 / 2.0, 24),
        }
    )
    path = data_dir / f"{symbol}.parquet"
    pq.write_table(table, path)
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    for symbol, quote in [
        ("BTCUSDT", 5e9),
        ("ETHUSDT", 2e9),
        ("SOLUSDT", 5e8),
        ("XRPUSDT", 1e8),
        ("DOGEUSDT", 5e7),
    ]:
        write_symbol(folder, symbol, quote)
    return folder


def bad_input(spec: str, data_dir: Path) -> str:
    with pytest.raises(BadInputError) as caught:
        resolve_symbols(spec, data_dir)
    assert "\n" not in str(caught.value)
    return str(caught.value)


# --- topN --------------------------------------------------------------------------------


def test_top_n_ranks_by_median_daily_quote_volume(data_dir: Path) -> None:
    assert resolve_symbols("top3", data_dir) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


def test_top_n_is_case_insensitive_and_tolerates_spaces(data_dir: Path) -> None:
    assert resolve_symbols("  TOP2 ", data_dir) == ["BTCUSDT", "ETHUSDT"]


def test_one_huge_day_does_not_beat_a_steadily_higher_median(tmp_path: Path) -> None:
    spiky = [1e6] * 39 + [1e12]
    write_symbol(tmp_path, "SPIKYUSDT", spiky)
    write_symbol(tmp_path, "STEADYUSDT", 1e7)
    assert resolve_symbols("top2", tmp_path) == ["STEADYUSDT", "SPIKYUSDT"]


def test_top_n_looks_only_at_the_last_window_days(tmp_path: Path) -> None:
    write_symbol(tmp_path, "FADEDUSDT", [1e10] * 30 + [1e5] * 10)  # big long ago, small now
    write_symbol(tmp_path, "RISINGUSDT", [1e5] * 30 + [1e7] * 10)
    assert resolve_symbols("top1", tmp_path, topn_window_days=10) == ["RISINGUSDT"]
    assert resolve_symbols("top1", tmp_path, topn_window_days=40) == ["FADEDUSDT"]


def test_each_symbol_is_measured_over_its_own_last_days(tmp_path: Path) -> None:
    # A file that stopped updating a year ago is judged by its own final month.
    write_symbol(tmp_path, "OLDUSDT", 1e9, end=END - pd.Timedelta(days=365))
    write_symbol(tmp_path, "NEWUSDT", 1e8)
    assert resolve_symbols("top2", tmp_path) == ["OLDUSDT", "NEWUSDT"]


def test_median_daily_quote_volume_sums_close_times_volume_per_utc_day(tmp_path: Path) -> None:
    path = write_symbol(tmp_path, "AUSDT", [10.0, 20.0, 30.0, 40.0, 50.0], days=5)
    assert median_daily_quote_volume(path, window_days=30) == pytest.approx(30.0)
    assert median_daily_quote_volume(path, window_days=2) == pytest.approx(45.0)


def test_top_n_ties_are_broken_by_symbol_name(tmp_path: Path) -> None:
    for symbol in ["CCC", "AAA", "BBB"]:
        write_symbol(tmp_path, symbol, 1e6)
    assert resolve_symbols("top3", tmp_path) == ["AAA", "BBB", "CCC"]


def test_top_n_larger_than_the_universe_takes_every_symbol(data_dir: Path) -> None:
    assert len(resolve_symbols("top100", data_dir)) == 5


def test_top_n_reads_csv_files_too(data_dir: Path) -> None:
    frame = pq.read_table(data_dir / "DOGEUSDT.parquet").to_pandas()
    frame["volume"] *= 1e4
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    frame.to_csv(data_dir / "PEPEUSDT.csv", index=False)
    assert resolve_symbols("top1", data_dir) == ["PEPEUSDT"]


def test_top_zero_is_an_error(data_dir: Path) -> None:
    assert "top0: N must be at least 1" in bad_input("top0", data_dir)


def test_top_n_over_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "README.txt").write_text("no data here")
    message = bad_input("top20", tmp_path)
    assert f"data folder {tmp_path} holds no data file" in message


def test_top_n_over_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    assert "does not exist" in bad_input("top20", tmp_path / "nope")


def test_top_n_names_every_unreadable_file(data_dir: Path) -> None:
    (data_dir / "BADUSDT.parquet").write_bytes(b"garbage")
    pd.DataFrame({"timestamp": ["2026-01-01"], "close": [1.0]}).to_csv(
        data_dir / "NOVOLUSDT.csv", index=False
    )
    message = bad_input("top3", data_dir)
    assert f"{data_dir / 'BADUSDT.parquet'}: cannot be read as Parquet" in message
    assert f"{data_dir / 'NOVOLUSDT.csv'}: missing column(s) volume" in message


# --- comma lists -----------------------------------------------------------------------


def test_comma_list_is_upper_cased_trimmed_and_deduplicated_in_order(data_dir: Path) -> None:
    assert resolve_symbols(" solusdt , BTCUSDT,,ethusdt , btcusdt, ", data_dir) == [
        "SOLUSDT",
        "BTCUSDT",
        "ETHUSDT",
    ]


def test_a_space_inside_a_symbol_is_not_trimmed_away(data_dir: Path) -> None:
    assert "'SOL USDT' is not a valid symbol" in bad_input("sol usdt", data_dir)


def test_a_single_symbol_is_a_list_of_one(data_dir: Path) -> None:
    assert resolve_symbols("xrpusdt", data_dir) == ["XRPUSDT"]


def test_a_trailing_comma_makes_a_topn_lookalike_a_symbol(tmp_path: Path) -> None:
    write_symbol(tmp_path, "TOP20", 1e6)
    write_symbol(tmp_path, "OTHER", 1e9)
    assert resolve_symbols("TOP20,", tmp_path) == ["TOP20"]
    assert resolve_symbols("top20", tmp_path) == ["OTHER", "TOP20"]


def test_every_bad_symbol_is_named_with_its_reason(data_dir: Path) -> None:
    message = bad_input("BTCUSDT,BTC/USDT,NOPEUSDT,-LEADING,ETHUSDT,MISSINGUSDT", data_dir)
    assert message.startswith("symbol list: 4 bad symbol(s): ")
    assert "'BTC/USDT' is not a valid symbol" in message
    assert "'-LEADING' is not a valid symbol" in message
    assert f"NOPEUSDT has no data file in {data_dir}" in message
    assert "MISSINGUSDT has no data file" in message
    assert "BTCUSDT" not in message.replace("BTC/USDT", "")


def test_symbols_longer_than_32_characters_are_invalid(data_dir: Path) -> None:
    assert "is not a valid symbol" in bad_input("A" * 33, data_dir)


def test_an_empty_list_is_an_error(data_dir: Path) -> None:
    assert "symbol list: no symbols given" in bad_input(" , ,", data_dir)


def test_a_list_against_a_missing_data_folder_says_so(tmp_path: Path) -> None:
    assert f"data folder {tmp_path / 'nope'} does not exist" in bad_input(
        "BTCUSDT", tmp_path / "nope"
    )


def test_a_thousand_symbol_list_is_not_mistaken_for_a_path(tmp_path: Path) -> None:
    names = [f"S{i:04d}" for i in range(1000)]
    for name in names[:2]:
        write_symbol(tmp_path, name, 1e6, days=2)
    message = bad_input(",".join(names), tmp_path)
    assert "998 bad symbol(s)" in message


# --- CSV files ----------------------------------------------------------------------------


def test_csv_symbol_column_is_found_by_header_in_any_case(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "universe.csv"
    path.write_text("weight,Symbol\n0.5,ethusdt\n0.5,BTCUSDT\n")
    assert resolve_symbols(str(path), data_dir) == ["ETHUSDT", "BTCUSDT"]


def test_csv_without_header_uses_the_first_column(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "universe.csv"
    path.write_text("SOLUSDT,3\nXRPUSDT,1\n")
    assert resolve_symbols(str(path), data_dir) == ["SOLUSDT", "XRPUSDT"]


def test_csv_tolerates_bom_crlf_blank_lines_and_duplicates(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "universe.csv"
    path.write_bytes(b"\xef\xbb\xbfSYMBOL\r\nbtcusdt\r\n\r\n  ,\r\nETHUSDT\r\nBTCUSDT\r\n\r\n")
    assert resolve_symbols(str(path), data_dir) == ["BTCUSDT", "ETHUSDT"]


def test_a_file_without_the_csv_suffix_is_read_when_it_exists(
    data_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "universe.txt"
    path.write_text("dogeusdt\n")
    assert resolve_symbols(str(path), data_dir) == ["DOGEUSDT"]


def test_an_empty_csv_is_an_error_naming_the_file(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_text("\n\n")
    assert f"symbols file {path} lists no symbols" in bad_input(str(path), data_dir)


def test_a_csv_with_only_a_header_is_an_error_naming_the_file(
    data_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "header.csv"
    path.write_text("symbol,weight\n")
    assert f"symbols file {path} lists no symbols" in bad_input(str(path), data_dir)


def test_a_missing_csv_is_an_error_naming_the_file(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    assert f"symbols file {path} does not exist" in bad_input(str(path), data_dir)


def test_a_csv_that_is_not_utf8_is_an_error(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"symbol\nBTC\xe9USDT\n")
    assert f"symbols file {path}: not UTF-8 text" in bad_input(str(path), data_dir)


def test_bad_symbols_in_a_csv_are_named_with_the_file(data_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "universe.csv"
    path.write_text("symbol\nBTCUSDT\nBAD SYMBOL\nNOPEUSDT\n")
    message = bad_input(str(path), data_dir)
    assert message.startswith(f"symbols file {path}: 2 bad symbol(s)")
    assert "'BAD SYMBOL' is not a valid symbol" in message
    assert "NOPEUSDT has no data file" in message
