"""The demo universe: deterministic, valid, and realistic enough to train on."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import retrainer.base.demo_data as demo_data
from retrainer.base.artifacts import atomic_write_bytes
from retrainer.base.config import CostSettings
from retrainer.base.costs import resolve_costs
from retrainer.base.data import load_ohlcv
from retrainer.base.demo_data import COMPLETE_MARKER, DEMO_END, is_complete, write_demo_universe
from retrainer.base.symbols import median_daily_quote_volume, resolve_symbols


@pytest.fixture(scope="module")
def universe(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], float]:
    """The default universe, generated once: (folder, files, seconds it took)."""
    folder = tmp_path_factory.mktemp("demo")
    started = time.perf_counter()
    paths = write_demo_universe(folder)
    return folder, paths, time.perf_counter() - started


def all_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def log_returns(path: Path) -> np.ndarray:
    close = pq.read_table(path, columns=["close"]).column("close").to_numpy()
    return np.diff(np.log(close))


def lag1_autocorrelation(x: np.ndarray) -> float:
    return float(np.corrcoef(x[1:], x[:-1])[0, 1])


# --- the default universe -----------------------------------------------------------------


def test_default_universe_has_30_plus_symbols_with_two_years_of_hourly_bars(
    universe: tuple[Path, list[Path], float],
) -> None:
    folder, paths, _ = universe
    assert len(paths) >= 30
    assert [p.stem for p in paths][:3] == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    frame = load_ohlcv(paths[0], min_rows=1000)
    assert len(frame) == 760 * 24
    steps = np.diff(frame["timestamp"].to_numpy()).astype("timedelta64[h]")
    assert (steps == np.timedelta64(1, "h")).all()
    assert frame["timestamp"].iloc[-1] == DEMO_END.replace(hour=0) - np.timedelta64(1, "h")


def test_generation_is_fast(universe: tuple[Path, list[Path], float]) -> None:
    assert universe[2] < 5.0


def test_every_demo_file_passes_validation(universe: tuple[Path, list[Path], float]) -> None:
    for path in universe[1]:
        load_ohlcv(path, min_rows=1000)


def test_timestamps_are_stored_tz_aware_in_utc(universe: tuple[Path, list[Path], float]) -> None:
    schema = pq.read_schema(universe[1][0])
    assert str(schema.field("timestamp").type) == "timestamp[ns, tz=UTC]"


def test_quote_volumes_differ_by_more_than_ten_times_so_top_n_means_something(
    universe: tuple[Path, list[Path], float],
) -> None:
    folder, paths, _ = universe
    volumes = [median_daily_quote_volume(p, 30) for p in paths]
    assert max(volumes) > 10 * min(volumes)
    assert resolve_symbols("top3", folder)[0] == "BTCUSDT"


def test_volatility_clusters(universe: tuple[Path, list[Path], float]) -> None:
    for path in universe[1]:
        assert lag1_autocorrelation(np.abs(log_returns(path))) > 0.05, path.name


def test_returns_are_only_weakly_predictable(universe: tuple[Path, list[Path], float]) -> None:
    autocorrelations = [lag1_autocorrelation(log_returns(p)) for p in universe[1]]
    assert all(abs(a) < 0.1 for a in autocorrelations)
    assert max(abs(a) for a in autocorrelations) > 0.02  # but not nothing


def test_spread_estimates_follow_the_true_spreads_from_liquid_to_illiquid(
    universe: tuple[Path, list[Path], float],
) -> None:
    # The demo draws each bar's high and low from 16 points of its path, which misses
    # part of the range: Corwin-Schultz then reads about half the true spread (0.4-0.8
    # of it beyond the most liquid few; bench/metrics_check.py has the table).
    paths = universe[1]
    estimates, truths = [], []
    for rank, path in enumerate(paths):
        costs = resolve_costs(path.stem, load_ohlcv(path, 1000), CostSettings())
        estimates.append(costs.half_spread_bps)
        truths.append(demo_data._profile(path.stem, rank, 7).half_spread * 1e4)
    assert estimates[0] < 3.0 and truths[0] < 3.0  # BTCUSDT
    assert 10.0 < estimates[-1] < truths[-1]
    assert np.corrcoef(estimates, truths)[0, 1] > 0.9
    ratios = np.array(estimates[10:]) / np.array(truths[10:])
    assert 0.3 < float(np.median(ratios)) <= 1.0


def test_each_symbol_has_its_own_price_level(universe: tuple[Path, list[Path], float]) -> None:
    first_closes = [pq.read_table(p, columns=["close"])["close"][0].as_py() for p in universe[1]]
    assert max(first_closes) / min(first_closes) > 1e4
    assert len(set(first_closes)) == len(first_closes)


def test_the_readme_and_marker_describe_the_generation(
    universe: tuple[Path, list[Path], float],
) -> None:
    folder, paths, _ = universe
    marker = json.loads((folder / COMPLETE_MARKER).read_text())
    assert marker["seed"] == 7 and marker["n_symbols"] == 36 and marker["days"] == 760
    assert sorted(marker["files"]) == sorted(p.name for p in paths)
    assert "BTCUSDT" in (folder / "README.txt").read_text()
    assert is_complete(folder)
    assert not is_complete(folder, seed=8)


# --- determinism and crash safety (small universes) ----------------------------------------


def test_two_generations_are_byte_identical(tmp_path: Path) -> None:
    write_demo_universe(tmp_path / "a", n_symbols=3, days=10)
    write_demo_universe(tmp_path / "b", n_symbols=3, days=10)
    assert all_bytes(tmp_path / "a") == all_bytes(tmp_path / "b")


def test_another_seed_gives_other_data(tmp_path: Path) -> None:
    write_demo_universe(tmp_path / "a", n_symbols=2, days=5, seed=1)
    write_demo_universe(tmp_path / "b", n_symbols=2, days=5, seed=2)
    a, b = all_bytes(tmp_path / "a"), all_bytes(tmp_path / "b")
    assert a.keys() == b.keys()
    assert a["BTCUSDT.parquet"] != b["BTCUSDT.parquet"]


def test_a_smaller_universe_is_a_prefix_of_a_larger_one(tmp_path: Path) -> None:
    small = write_demo_universe(tmp_path / "small", n_symbols=2, days=5)
    large = write_demo_universe(tmp_path / "large", n_symbols=5, days=5)
    assert [p.name for p in large[:2]] == [p.name for p in small]
    for s, big in zip(small, large, strict=False):
        assert s.read_bytes() == big.read_bytes()


def test_a_custom_end_moves_the_last_bar(tmp_path: Path) -> None:
    end = datetime(2025, 3, 1, 12, tzinfo=UTC)
    path = write_demo_universe(tmp_path, n_symbols=1, days=2, end=end)[0]
    frame = load_ohlcv(path, min_rows=48)
    assert frame["timestamp"].iloc[-1].to_pydatetime() == end.replace(hour=11)


def test_many_symbols_get_unique_valid_tickers(tmp_path: Path) -> None:
    tickers = demo_data.demo_tickers(150)
    assert len(set(tickers)) == 150
    assert all(t.endswith("USDT") and t.isupper() for t in tickers)


def test_an_interrupted_generation_is_never_marked_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_demo_universe(tmp_path, n_symbols=3, days=3)
    assert is_complete(tmp_path, n_symbols=3, days=3)
    written: list[Path] = []

    def write_then_die(path: Path, data: bytes) -> None:
        if written:
            raise KeyboardInterrupt  # killed after the first file
        atomic_write_bytes(path, data)
        written.append(path)

    monkeypatch.setattr(demo_data, "atomic_write_bytes", write_then_die)
    with pytest.raises(KeyboardInterrupt):
        write_demo_universe(tmp_path, n_symbols=3, days=3, seed=99)
    assert not (tmp_path / COMPLETE_MARKER).exists()
    assert not is_complete(tmp_path, n_symbols=3, days=3)
    assert not list(tmp_path.glob(".*.tmp"))
    for path in tmp_path.glob("*.parquet"):
        load_ohlcv(path, min_rows=1)  # every file whole: old or new, never torn


def test_regeneration_removes_only_its_own_stale_files(tmp_path: Path) -> None:
    write_demo_universe(tmp_path, n_symbols=4, days=2)
    (tmp_path / "MINEUSDT.parquet").write_bytes(b"someone else's")
    write_demo_universe(tmp_path, n_symbols=2, days=2)
    names = sorted(p.name for p in tmp_path.glob("*.parquet"))
    assert names == ["BTCUSDT.parquet", "ETHUSDT.parquet", "MINEUSDT.parquet"]


def test_nonsense_sizes_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_demo_universe(tmp_path, n_symbols=0)
    with pytest.raises(ValueError):
        write_demo_universe(tmp_path, days=0)
