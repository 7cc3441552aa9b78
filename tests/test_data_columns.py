"""Data with other column names and epoch timestamps, read as it is through `[data.columns]`
and `[data] timestamp_unit`: by the data module, and by the real command everywhere it
reads data (ranking, costs, the attempt's TrainContext.data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from retrainer.base.config import CostSettings
from retrainer.base.costs import resolve_costs
from retrainer.base.data import DataFormat, load_ohlcv
from retrainer.base.errors import DataError
from tests.conftest import REPO, RunCli, read_json, write_config

THEIRS = {
    "timestamp": "date",
    "open": "Open",
    "high": "High",
    "low": "Low",
    "close": "Close",
    "volume": "Volume",
}
EXCHANGE_FORMAT = DataFormat(THEIRS, "ms")


def bars(n: int = 48) -> pd.DataFrame:
    rng = np.random.default_rng(3)
    close = 100.0 * np.exp(np.cumsum(rng.normal(0.0, 0.01, n)))
    open_ = np.concatenate([[100.0], close[:-1]])
    return pd.DataFrame(
        {
            "timestamp": pd.date_range("2026-03-01", periods=n, freq="h", tz="UTC", unit="ns"),
            "open": open_,
            "high": np.maximum(open_, close) * 1.002,
            "low": np.minimum(open_, close) * 0.998,
            "close": close,
            "volume": rng.uniform(1.0, 50.0, n),
        }
    )


def as_exchange_csv(frame: pd.DataFrame, path: Path) -> Path:
    """The frame as an exchange exports it: a `date` column of epoch milliseconds and
    capitalised OHLCV names."""
    out = frame.rename(columns=THEIRS)
    out["date"] = frame["timestamp"].astype("int64") // 10**6
    out.to_csv(path, index=False)
    return path


def test_a_csv_with_a_date_column_in_epoch_ms_and_capitalised_names_reads_as_ours(
    tmp_path: Path,
) -> None:
    frame = bars()
    loaded = load_ohlcv(as_exchange_csv(frame, tmp_path / "X.csv"), 10, EXCHANGE_FORMAT)
    pd.testing.assert_frame_equal(loaded, frame, check_freq=False)


@pytest.mark.parametrize(
    ("unit", "scale", "kind"),
    [("ms", 10**6, pa.int64()), ("s", 10**9, pa.int64()), ("s", 10**9, pa.float64())],
)
def test_parquet_epoch_numbers_read_in_the_configured_unit(
    tmp_path: Path, unit: str, scale: int, kind: pa.DataType
) -> None:
    frame = bars()
    epoch = frame["timestamp"].astype("int64") // scale
    table = pa.table(
        {
            "time": pa.array(epoch.to_numpy(), kind),
            **{name: frame[name].to_numpy() for name in ("open", "high", "low", "close", "volume")},
        }
    )
    pq.write_table(table, tmp_path / "X.parquet")
    loaded = load_ohlcv(tmp_path / "X.parquet", 10, DataFormat({"timestamp": "time"}, unit))
    assert (loaded["timestamp"] == frame["timestamp"]).all()


def test_fractional_epoch_seconds_keep_their_milliseconds_exactly(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n"
        "1767225600.125,1,2,0.5,1.5,10\n1767225601.250,1,2,0.5,1.5,10\n"
    )
    loaded = load_ohlcv(path, 1, DataFormat({}, "s"))
    assert list(loaded["timestamp"].astype("int64")) == [
        1767225600_125_000_000,
        1767225601_250_000_000,
    ]


def problem(path: Path, data_format: DataFormat) -> str:
    with pytest.raises(DataError) as caught:
        load_ohlcv(path, 1, data_format)
    return caught.value.problem


def test_a_mapped_column_the_file_lacks_is_named_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    bars().to_csv(path, index=False)
    message = problem(path, DataFormat({"timestamp": "date", "close": "Close"}))
    assert "missing column(s) date (data.columns.timestamp), Close (data.columns.close)" in (
        message
    )


def test_an_epoch_cell_that_is_not_a_number_names_its_row(tmp_path: Path) -> None:
    path = tmp_path / "X.csv"
    path.write_text(
        "timestamp,open,high,low,close,volume\n1767225600000,1,2,0.5,1.5,10\nsoon,1,2,0.5,1.5,10\n"
    )
    message = problem(path, DataFormat({}, "ms"))
    assert message == "timestamp at row 1 is not a number of ms since the epoch ('soon')"


def test_epoch_numbers_out_of_range_for_their_unit_ask_whether_the_unit_is_right(
    tmp_path: Path,
) -> None:
    path = tmp_path / "X.csv"
    path.write_text("timestamp,open,high,low,close,volume\n1767225600000,1,2,0.5,1.5,10\n")
    message = problem(path, DataFormat({}, "s"))  # milliseconds read as seconds
    assert message.startswith("timestamp at row 0 (1767225600000 s since the epoch) is out of")
    assert "is timestamp_unit right?" in message


def test_a_data_format_refuses_a_column_we_do_not_have() -> None:
    with pytest.raises(ValueError, match="unknown column"):
        DataFormat({"price": "Close"})


# --- through the command -------------------------------------------------------------


@pytest.mark.parametrize(
    ("data_keys", "named"),
    [
        ({"columns": {"price": "Close"}}, "data.columns.price: unknown key"),
        ({"columns": {"open": "Close", "close": "Close"}}, "open and close both read"),
        ({"columns": {"open": ""}}, "data.columns.open"),
        ({"timestamp_unit": "minutes"}, "data.timestamp_unit"),
    ],
)
def test_a_bad_columns_mapping_is_refused_at_config_load(
    tmp_path: Path, run_cli: RunCli, data_keys: dict[str, object], named: str
) -> None:
    config = write_config(
        tmp_path / "c.toml",
        {"run": {"root": str(tmp_path / "root")}, "data": {"path": str(tmp_path), **data_keys}},
    )

    result = run_cli("run", "--config", str(config), "--dry_run")

    assert result.returncode == 2, result.stdout + result.stderr
    assert named in result.stderr and "Traceback" not in result.stderr


PROBE = """
def train(ctx):
    data = ctx.data
    (ctx.out_dir / "model.bin").write_bytes(b"probe")
    return {
        "columns": ",".join(data.columns),
        "rows": len(data),
        "first": data["timestamp"].iloc[0].isoformat(),
        "close_sum": float(data["close"].sum()),
    }
"""


def test_a_night_ranks_costs_and_trains_on_mapped_files_as_they_are(
    tmp_path: Path, run_cli: RunCli
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    frames = {"AAAUSDT": bars(1200), "BBBUSDT": bars(1200).assign(volume=lambda f: f.volume / 100)}
    for symbol, frame in frames.items():
        as_exchange_csv(frame, data / f"{symbol}.csv")
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "probe.py").write_text(PROBE)
    config = write_config(
        tmp_path / "c.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": "top1", "retries": 0},
            "data": {"path": str(data), "columns": THEIRS, "timestamp_unit": "ms"},
            "trainer": {"plugin": "probe:train"},
        },
    )

    result = run_cli(
        "run", "--config", str(config), env={"PYTHONPATH": f"{tmp_path / 'plugins'}:{REPO}"}
    )

    assert result.returncode == 0, result.stdout + result.stderr
    (summary_path,) = (tmp_path / "root" / "summary").glob("*/engine_summary.json")
    by_symbol = read_json(summary_path)["by_symbol"]
    assert list(by_symbol) == ["AAAUSDT"]  # ranked by volume read through the mapping
    metrics = by_symbol["AAAUSDT"]["metrics"]
    assert metrics["columns"] == "timestamp,open,high,low,close,volume"
    assert metrics["rows"] == 1200 and metrics["first"] == "2026-03-01T00:00:00+00:00"
    assert metrics["close_sum"] == pytest.approx(float(frames["AAAUSDT"]["close"].sum()))
    (costs_path,) = (tmp_path / "root" / "runs").glob("*/costs.json")
    costs = json.loads(costs_path.read_text())["symbols"]["AAAUSDT"]
    expected = resolve_costs("AAAUSDT", frames["AAAUSDT"], CostSettings())
    assert costs["spread_bars"] == expected.spread_bars > 0
    assert costs["half_spread_bps"] == pytest.approx(expected.half_spread_bps)
