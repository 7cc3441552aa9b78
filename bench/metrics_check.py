"""Are the default trainer's reported figures plausible on real and demo bars?

    python -m bench.metrics_check [--demo-symbols 36] [--train 5] [--no-train]

Real bars: the daily Google stock (2004-2013) and hourly EURUSD (2017-2018) files that
the `backtesting` package ships (the dev extra). Demo bars: the demo universe, whose true
half-spread is known. For each: bars per year by the old rule (calendar time over the
median spacing) and the new one (bars observed per year), the half-spread by the old
estimator (per-pair estimates clipped at 0, 30 days) and the published one (the window's
mean clipped, 90 days), and the true one where known. Then the default trainer on the
real files and a few demo symbols: the baseline and the standard errors metrics.json
reports. Prints the tables, writes bench/results/metrics_check.json.
"""

from __future__ import annotations

import argparse
import io
import math
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.common import RESULTS, print_table, write_results
from retrainer.base.config import AssetClass, CostSettings
from retrainer.base.costs import SymbolCosts, corwin_schultz_half_spread_bps, resolve_costs
from retrainer.base.demo_data import DEMO_END, demo_tickers, simulate_universe
from retrainer.training.contract import TrainContext
from retrainer.training.evaluate import SECONDS_PER_YEAR, observed_bars_per_year
from retrainer.training.trainer import train

FloatArray = npt.NDArray[np.float64]
REAL_FILES: dict[str, tuple[str, AssetClass]] = {
    "GOOG": ("GOOG.csv", "equity"),
    "EURUSD": ("EURUSD.csv", "fx"),
}
DEMO_SEED = 7
LEGACY_WINDOW_DAYS = 30


def load_backtesting_bars(file_name: str) -> pd.DataFrame:
    """One of backtesting.test's CSV files (",Open,High,Low,Close,Volume") as our bars."""
    source = resources.files("backtesting.test").joinpath(file_name)
    with resources.as_file(source) as path:
        raw = pd.read_csv(path, index_col=0, parse_dates=True)
    return pd.DataFrame(
        {
            "timestamp": pd.DatetimeIndex(raw.index).tz_localize("UTC"),
            **{name.lower(): raw[name].to_numpy(np.float64) for name in raw.columns},
        }
    )


def legacy_half_spread_bps(high: FloatArray, low: FloatArray) -> float:
    """The estimator before issue 14: each pair's Corwin-Schultz estimate clipped at 0
    before the mean, no overnight adjustment (a measure of volatility more than spread)."""
    k = 3.0 - 2.0 * math.sqrt(2.0)
    h0, h1, l0, l1 = high[:-1], high[1:], low[:-1], low[1:]
    beta = np.log(h0 / l0) ** 2 + np.log(h1 / l1) ** 2
    gamma = np.log(np.maximum(h0, h1) / np.minimum(l0, l1)) ** 2
    alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / k - np.sqrt(gamma / k)
    spread = 2.0 * np.expm1(alpha) / (1.0 + np.exp(alpha))
    return float(np.mean(np.maximum(spread, 0.0))) / 2.0 * 1e4


def legacy_bars_per_year(timestamps: pd.Series) -> float:
    """The annualisation before issue 14: calendar seconds over the median spacing."""
    return SECONDS_PER_YEAR / float(timestamps.diff().dropna().dt.total_seconds().median())


def settings_for(name: str) -> CostSettings:
    asset_class: AssetClass = REAL_FILES[name][1] if name in REAL_FILES else "crypto"
    return CostSettings(asset_class=asset_class)


def spread_row(
    name: str, bars: pd.DataFrame, settings: CostSettings, true_bps: float | None
) -> dict[str, Any]:
    recent = bars[bars["timestamp"] > bars["timestamp"].iloc[-1] - pd.Timedelta(days=30)]
    costs = resolve_costs(name, bars, settings)
    whole = corwin_schultz_half_spread_bps(
        bars["high"].to_numpy(), bars["low"].to_numpy(), bars["close"].to_numpy()
    )
    old = legacy_half_spread_bps(recent["high"].to_numpy(), recent["low"].to_numpy())
    return {
        "symbol": name,
        "bars": len(bars),
        "bars_per_year_old": legacy_bars_per_year(bars["timestamp"]),
        "bars_per_year_new": observed_bars_per_year(bars["timestamp"]),
        "half_spread_old_bps": old,
        "half_spread_new_bps": costs.half_spread_bps,
        "half_spread_source": str(costs.half_spread_source),
        "spread_bars": costs.spread_bars,
        "half_spread_whole_history_bps": whole.half_spread_bps,
        "half_spread_true_bps": true_bps,
        "new_over_true": None if not true_bps else costs.half_spread_bps / true_bps,
        "old_over_true": None if not true_bps else old / true_bps,
    }


def train_row(name: str, bars: pd.DataFrame, costs: SymbolCosts, out: Path) -> dict[str, Any]:
    """The default trainer with its default params; the figures issue 14 asked for."""
    started = time.perf_counter()
    metrics = _train(name, bars, costs, out / "cost_aware", {})
    # The same model (same seed and fit) under the old rule: long/short on the sign each bar.
    sign = _train(name, bars, costs, out / "sign", {"strategy": "sign"})
    keys = (
        "test_bars",
        "test_days",
        "majority_rate",
        "test_accuracy",
        "accuracy_edge",
        "accuracy_edge_se",
        "test_log_loss",
        "gross_sharpe",
        "gross_sharpe_se",
        "net_sharpe",
        "net_sharpe_se",
        "trades",
        "zero_return_bars",
        "bars_per_year",
    )
    return {
        "symbol": name,
        **{key: metrics.get(key) for key in keys},
        "sign_net_sharpe": sign.get("net_sharpe"),
        "sign_trades": sign.get("trades"),
        "half_spread_bps": costs.half_spread_bps,
        "cost_per_turnover_bps": costs.cost_per_turnover_bps,
        "seconds": time.perf_counter() - started,
    }


def _train(
    name: str, bars: pd.DataFrame, costs: SymbolCosts, out: Path, params: dict[str, Any]
) -> dict[str, Any]:
    out.mkdir(parents=True)
    ctx = TrainContext(
        symbol=name,
        data_source=lambda: bars,
        costs=costs,
        out_dir=out,
        seed=42,
        device="cpu",
        threads=1,
        params=params,
    )
    return dict(train(ctx))


def measure(
    demo_symbols: int, trained_demo: int, with_training: bool, work: Path
) -> dict[str, Any]:
    frames: dict[str, pd.DataFrame] = {}
    spreads = []
    for name, (file_name, _) in REAL_FILES.items():
        frames[name] = load_backtesting_bars(file_name)
        spreads.append(spread_row(name, frames[name], settings_for(name), None))
    for profile, data in simulate_universe(demo_symbols, 760, DEMO_SEED, DEMO_END):
        frames[profile.ticker] = pd.read_parquet(io.BytesIO(data))
        true_bps = profile.half_spread * 1e4
        spreads.append(spread_row(profile.ticker, frames[profile.ticker], CostSettings(), true_bps))
    trained = []
    if with_training:
        tickers = demo_tickers(demo_symbols)
        # The most liquid and the least: the rule should trade less where costs are high.
        demo_pick = [*tickers[: trained_demo // 2], *tickers[-(trained_demo - trained_demo // 2) :]]
        for name in [*REAL_FILES, *demo_pick]:
            costs = resolve_costs(name, frames[name], settings_for(name))
            trained.append(train_row(name, frames[name], costs, work / "models" / name))
    ratios = [r["new_over_true"] for r in spreads if r["new_over_true"] is not None]
    old_ratios = [r["old_over_true"] for r in spreads if r["old_over_true"] is not None]
    return {
        "spreads": spreads,
        "trained": trained,
        "demo_ratio_new_over_true": _quantiles(ratios),
        "demo_ratio_old_over_true": _quantiles(old_ratios),
    }


def _quantiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    array = np.asarray(values)
    return {
        "median": float(np.median(array)),
        "min": float(array.min()),
        "max": float(array.max()),
        "n": float(len(array)),
    }


def _cell(value: Any, digits: int = 2) -> Any:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return value


def print_report(report: dict[str, Any]) -> None:
    header = [
        "symbol",
        "bars",
        "bars/yr old",
        "bars/yr new",
        "hs old bps",
        "hs new bps",
        "source",
        "hs whole bps",
        "hs true bps",
        "new/true",
        "old/true",
    ]
    rows = [
        [
            r["symbol"],
            r["bars"],
            _cell(r["bars_per_year_old"], 0),
            _cell(r["bars_per_year_new"], 0),
            _cell(r["half_spread_old_bps"]),
            _cell(r["half_spread_new_bps"]),
            r["half_spread_source"],
            _cell(r["half_spread_whole_history_bps"]),
            _cell(r["half_spread_true_bps"]),
            _cell(r["new_over_true"]),
            _cell(r["old_over_true"]),
        ]
        for r in report["spreads"]
    ]
    print_table("Bars per year and half-spread (hs), old vs new", header, rows)
    new, old = report["demo_ratio_new_over_true"], report["demo_ratio_old_over_true"]
    if new:
        print(
            f"\ndemo estimate / true half-spread: new median {new['median']:.2f} "
            f"({new['min']:.2f}-{new['max']:.2f}), old median {old['median']:.2f} "
            f"({old['min']:.2f}-{old['max']:.2f}) over {int(new['n'])} symbols"
        )
    if report["trained"]:
        header = [
            "symbol",
            "test bars",
            "days",
            "majority",
            "accuracy",
            "edge ± se",
            "log loss",
            "gross SR ± se",
            "net SR ± se",
            "trades",
            "sign: net SR",
            "trades",
            "cost bps",
            "zero",
        ]
        rows = [
            [
                t["symbol"],
                t["test_bars"],
                _cell(t["test_days"], 0),
                _cell(t["majority_rate"], 3),
                _cell(t["test_accuracy"], 3),
                f"{_cell(t['accuracy_edge'], 3)} ± {_cell(t['accuracy_edge_se'], 3)}",
                _cell(t["test_log_loss"], 4),
                f"{_cell(t['gross_sharpe'])} ± {_cell(t['gross_sharpe_se'])}",
                f"{_cell(t['net_sharpe'])} ± {_cell(t['net_sharpe_se'])}",
                t["trades"],
                _cell(t["sign_net_sharpe"]),
                t["sign_trades"],
                _cell(t["cost_per_turnover_bps"]),
                t["zero_return_bars"],
            ]
            for t in report["trained"]
        ]
        print_table("The default trainer's test span (default params, seed 42)", header, rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-symbols", type=int, default=36)
    parser.add_argument("--train", type=int, default=4, help="demo symbols to train")
    parser.add_argument("--no-train", action="store_true")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        report = measure(args.demo_symbols, args.train, not args.no_train, Path(tmp))
    print_report(report)
    write_results("metrics_check", report, args.results)


if __name__ == "__main__":
    main()
