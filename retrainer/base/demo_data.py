"""A deterministic, realistic demo universe of hourly crypto-like bars.

Each symbol gets its own price level, liquidity (Zipf-like quote volume, so top-N means
something), bid-ask spread, volatility and a weak, symbol-specific short-horizon
predictability. Per bar:

- volatility: a mean-reverting log-variance process (volatility clusters), times an
  intraday and weekend seasonality;
- return: a market shock shared by all symbols plus an idiosyncratic one, simulated in
  sub-steps (the intrabar path gives high and low), a weak dependence on the previous
  bar's shock (momentum or mean reversion, |b| <= 0.06, well under typical costs), and
  rare Poisson jumps;
- high/low: the sub-step path's extremes widened by the half-spread (the high is a buy at
  the ask, the low a sell at the bid), so a Corwin-Schultz estimate sees the spread;
- open: the previous close plus a tiny noise; volume: the symbol's quote volume with an
  intraday profile, higher when volatility is high.

Same arguments, same numpy and pyarrow: byte-identical files. Each symbol's series depends
only on (seed, its index), so a smaller universe is a prefix of a larger one. Files are
written atomically; `.complete` (with the parameters and every file's sha256) last.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from retrainer.base.artifacts import atomic_write_bytes, atomic_write_text, sha256_bytes, to_json

DEMO_END = datetime(2026, 11, 1, tzinfo=UTC)
COMPLETE_MARKER = ".complete"
README_NAME = "README.txt"
FORMAT_VERSION = 1

SUB_STEPS = 16  # intrabar path resolution for high/low
HOURS_PER_YEAR = 24 * 365
NS_PER_HOUR = 3_600 * 10**9
_MARKET_STREAM = 1_000_003  # the seed stream of the shared market shock

# (ticker, price at the start): plausible names first, most liquid first.
KNOWN_TICKERS: tuple[tuple[str, float], ...] = (
    ("BTCUSDT", 62_000.0),
    ("ETHUSDT", 2_450.0),
    ("SOLUSDT", 145.0),
    ("BNBUSDT", 570.0),
    ("XRPUSDT", 0.53),
    ("DOGEUSDT", 0.11),
    ("ADAUSDT", 0.35),
    ("AVAXUSDT", 26.0),
    ("LINKUSDT", 11.0),
    ("TRXUSDT", 0.16),
    ("DOTUSDT", 4.2),
    ("LTCUSDT", 66.0),
    ("NEARUSDT", 4.8),
    ("UNIUSDT", 7.1),
    ("APTUSDT", 9.0),
    ("ATOMUSDT", 4.5),
    ("ARBUSDT", 0.55),
    ("OPUSDT", 1.6),
    ("FILUSDT", 3.6),
    ("INJUSDT", 20.0),
)
# Made-up names for the long tail: prefix x ending, a fixed order independent of the seed.
_PREFIXES = ("ZOR", "VEX", "LUM", "QUIB", "NORV", "PAXI", "TELO", "DRIM", "MOXA", "SYLF")
_ENDINGS = ("EX", "ON", "IUM", "US", "A", "O")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class SymbolProfile:
    """What makes one demo symbol different from another."""

    ticker: str
    start_price: float
    daily_quote_volume: float  # in the quote currency (USDT)
    half_spread: float  # a fraction of the price
    hourly_vol: float  # the average per-bar return standard deviation
    vol_persistence: float  # AR(1) coefficient of the hourly log-variance
    vol_of_vol: float  # stationary standard deviation of the log-variance
    market_loading: float  # correlation of the shock with the market's
    predictability: float  # b: weight of the previous bar's shock in this bar's return
    jumps_per_day: float
    jump_scale: float  # jump size standard deviation, in hourly_vol units


def demo_tickers(n_symbols: int) -> list[str]:
    """The universe's tickers, most liquid first: known names, then made-up ones."""
    names = [ticker for ticker, _ in KNOWN_TICKERS]
    names += [f"{prefix}{ending}USDT" for ending in _ENDINGS for prefix in _PREFIXES]
    names += [f"ALT{i:04d}USDT" for i in range(max(0, n_symbols - len(names)))]
    return names[:n_symbols]


def write_demo_universe(
    out_dir: Path,
    n_symbols: int = 36,
    days: int = 760,
    seed: int = 7,
    end: datetime = DEMO_END,
) -> list[Path]:
    """Write `<TICKER>.parquet` for each demo symbol, then README.txt and `.complete`."""
    if n_symbols < 1 or days < 1:
        raise ValueError("n_symbols and days must be at least 1")
    end = _as_utc(end)
    params = _parameters(n_symbols, days, seed, end)
    out_dir.mkdir(parents=True, exist_ok=True)
    # An interrupted regeneration must not look complete: the old marker goes first.
    previous = _read_marker(out_dir)
    (out_dir / COMPLETE_MARKER).unlink(missing_ok=True)
    hashes: dict[str, str] = {}
    paths = []
    profiles = []
    for profile, data in simulate_universe(n_symbols, days, seed, end):
        path = out_dir / f"{profile.ticker}.parquet"
        atomic_write_bytes(path, data)
        hashes[path.name] = sha256_bytes(data)
        paths.append(path)
        profiles.append(profile)
    _remove_stale_files(out_dir, previous, hashes)
    atomic_write_text(out_dir / README_NAME, _readme(params, profiles))
    atomic_write_text(out_dir / COMPLETE_MARKER, to_json({**params, "files": hashes}))
    return paths


def simulate_universe(
    n_symbols: int, days: int, seed: int, end: datetime
) -> Iterator[tuple[SymbolProfile, bytes]]:
    """Each symbol's profile and Parquet bytes, most liquid first."""
    timestamps = _hourly_timestamps(end, days)
    season = _seasonality(timestamps)
    tickers = demo_tickers(n_symbols)
    profiles = [_profile(ticker, i, seed) for i, ticker in enumerate(tickers)]
    rngs = [np.random.default_rng([seed, i]) for i in range(n_symbols)]
    log_variance = _log_variance_paths(profiles, rngs, len(timestamps))
    market_rng = np.random.default_rng([seed, _MARKET_STREAM])
    market = market_rng.standard_normal((len(timestamps), SUB_STEPS))
    for i, profile in enumerate(profiles):
        bars = simulate_bars(profile, rngs[i], log_variance[:, i], market, season)
        yield profile, _parquet_bytes(timestamps, bars)


def is_complete(
    out_dir: Path, n_symbols: int = 36, days: int = 760, seed: int = 7, end: datetime = DEMO_END
) -> bool:
    """True when out_dir holds a finished generation with these parameters (files present)."""
    marker = _read_marker(out_dir)
    expected = _parameters(n_symbols, days, seed, _as_utc(end))
    if marker is None or any(marker.get(key) != value for key, value in expected.items()):
        return False
    files = marker.get("files")
    return isinstance(files, dict) and all((out_dir / name).is_file() for name in files)


def _as_utc(moment: datetime) -> datetime:
    """A naive datetime is taken as UTC, an aware one converted."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _parameters(n_symbols: int, days: int, seed: int, end: datetime) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "n_symbols": n_symbols,
        "days": days,
        "seed": seed,
        "end": end.isoformat().replace("+00:00", "Z"),
        "bar": "1h",
    }


def _read_marker(out_dir: Path) -> dict[str, Any] | None:
    try:
        loaded = json.loads((out_dir / COMPLETE_MARKER).read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def _remove_stale_files(
    out_dir: Path, previous: dict[str, Any] | None, kept: dict[str, str]
) -> None:
    # Only files a previous generation recorded as its own: never touch anything else.
    old = previous.get("files") if previous else None
    if isinstance(old, dict):
        for name in old:
            if name not in kept and "/" not in name and name.endswith(".parquet"):
                (out_dir / name).unlink(missing_ok=True)


# --- the symbols --------------------------------------------------------------------------


def _profile(ticker: str, rank: int, seed: int) -> SymbolProfile:
    """Liquid names: tight spreads, calmer prices; the tail: wide spreads, wilder prices."""
    rng = np.random.default_rng([seed, rank, 1])  # parameters: apart from the path draws
    known = dict(KNOWN_TICKERS)
    # 0 for the most liquid, 1 from the 36th on: independent of the universe's size.
    illiquidity = min(1.0, rank / 35)
    # Drawn for every symbol, so the draws that follow do not depend on the name.
    drawn_price = float(10 ** rng.uniform(-3.0, 2.0))
    start_price = known.get(ticker, drawn_price)
    annual_vol = 0.35 + 0.75 * illiquidity**0.8 + rng.uniform(-0.05, 0.1)
    sign = 1.0 if rng.random() < 0.5 else -1.0
    return SymbolProfile(
        ticker=ticker,
        start_price=start_price,
        daily_quote_volume=2.0e9 * (rank + 1) ** -1.25 * float(rng.lognormal(0.0, 0.2)),
        half_spread=min(80e-4, 1.0e-4 * (rank + 1) ** 0.95 * float(rng.lognormal(0.0, 0.15))),
        hourly_vol=annual_vol / math.sqrt(HOURS_PER_YEAR),
        vol_persistence=float(rng.uniform(0.985, 0.995)),
        vol_of_vol=float(rng.uniform(0.5, 0.8)),
        market_loading=0.85 if rank == 0 else float(rng.uniform(0.35, 0.75)),
        predictability=sign * float(rng.uniform(0.02, 0.06)),
        jumps_per_day=float(rng.uniform(0.03, 0.12)),
        jump_scale=float(rng.uniform(4.0, 8.0)),
    )


def _hourly_timestamps(end: datetime, days: int) -> IntArray:
    """Bar open times, hourly, the last bar starting one hour before `end`."""
    end_ns = int(end.timestamp()) * 10**9
    hours = days * 24
    return end_ns - NS_PER_HOUR * np.arange(hours, 0, -1, dtype=np.int64)


@dataclass(frozen=True)
class Seasonality:
    volatility: FloatArray  # multiplier per bar, mean about 1
    volume: FloatArray


def _seasonality(timestamps: IntArray) -> Seasonality:
    """Busier around the European and US sessions, quieter in the Asian night and weekends."""
    hour = (timestamps // NS_PER_HOUR) % 24
    weekday = (timestamps // (24 * NS_PER_HOUR) + 3) % 7  # 1970-01-01 was a Thursday
    session = 1.0 + 0.25 * np.cos(2.0 * np.pi * (hour - 15) / 24.0)
    weekend = np.where(weekday >= 5, 0.8, 1.0)
    volatility = session * weekend
    volume = session**2 * weekend**1.5
    return Seasonality(volatility / volatility.mean(), volume / volume.mean())


def _log_variance_paths(
    profiles: list[SymbolProfile], rngs: list[np.random.Generator], n_bars: int
) -> FloatArray:
    """A mean-reverting log-variance per symbol (bars x symbols), zero mean."""
    phi = np.array([p.vol_persistence for p in profiles])
    scale = np.array([p.vol_of_vol for p in profiles]) * np.sqrt(1.0 - phi**2)
    shocks: FloatArray = np.stack([rng.standard_normal(n_bars) for rng in rngs], axis=1) * scale
    paths = np.empty_like(shocks)
    # Start in the stationary distribution; the loop runs over time, vectorised over symbols.
    paths[0] = shocks[0] / np.sqrt(1.0 - phi**2)
    for t in range(1, n_bars):
        paths[t] = phi * paths[t - 1] + shocks[t]
    return paths


# --- one symbol's bars -------------------------------------------------------------------


def simulate_bars(
    profile: SymbolProfile,
    rng: np.random.Generator,
    log_variance: FloatArray,
    market: FloatArray,
    season: Seasonality,
) -> dict[str, FloatArray]:
    """open/high/low/close/volume for one symbol; market is (bars, SUB_STEPS) shocks."""
    n_bars = len(log_variance)
    # exp(x/2) has mean exp(var/8) for x ~ N(0, var): divide it out so hourly_vol is the mean.
    sigma = (
        profile.hourly_vol
        * np.exp(log_variance / 2.0 - profile.vol_of_vol**2 / 8.0)
        * season.volatility
    )
    shocks = _bar_shocks(profile, rng, market)
    bar_shock = shocks.sum(axis=1) / math.sqrt(SUB_STEPS)  # N(0, 1) per bar
    steps = _sub_step_returns(profile, rng, sigma, shocks, bar_shock)
    log_path = math.log(profile.start_price) + np.cumsum(steps.ravel()).reshape(n_bars, SUB_STEPS)
    close_mid = log_path[:, -1]
    open_mid = np.concatenate([[math.log(profile.start_price)], close_mid[:-1]])
    high_mid = np.maximum(log_path.max(axis=1), open_mid)
    low_mid = np.minimum(log_path.min(axis=1), open_mid)
    bars = _quote_prices(profile, rng, open_mid, high_mid, low_mid, close_mid)
    bars["volume"] = _volume(profile, rng, sigma, bar_shock, bars["close"], season)
    return bars


def _bar_shocks(profile: SymbolProfile, rng: np.random.Generator, market: FloatArray) -> FloatArray:
    own = rng.standard_normal(market.shape)
    loading = profile.market_loading
    return loading * market + math.sqrt(1.0 - loading**2) * own


def _sub_step_returns(
    profile: SymbolProfile,
    rng: np.random.Generator,
    sigma: FloatArray,
    shocks: FloatArray,
    bar_shock: FloatArray,
) -> FloatArray:
    """Log-returns per sub-step: noise, the weak predictable part, and jumps."""
    n_bars = len(sigma)
    b = profile.predictability
    previous_shock = np.concatenate([[0.0], bar_shock[:-1]])
    noise = math.sqrt(1.0 - b**2) * shocks / math.sqrt(SUB_STEPS)
    drift = (b * previous_shock / SUB_STEPS)[:, None]
    steps = sigma[:, None] * (noise + drift)
    jumps = rng.random(n_bars) < profile.jumps_per_day / 24.0
    jump_at = rng.integers(0, SUB_STEPS, n_bars)
    jump_size = rng.standard_normal(n_bars) * profile.jump_scale * profile.hourly_vol
    steps[jumps, jump_at[jumps]] += jump_size[jumps]
    return steps


def _quote_prices(
    profile: SymbolProfile,
    rng: np.random.Generator,
    open_mid: FloatArray,
    high_mid: FloatArray,
    low_mid: FloatArray,
    close_mid: FloatArray,
) -> dict[str, FloatArray]:
    """Prices on the symbol's tick grid: high at the ask, low at the bid, open ~ last close."""
    tick = 10.0 ** (math.floor(math.log10(profile.start_price)) - 5)
    spread = profile.half_spread
    close = np.exp(close_mid)
    open_ = np.exp(open_mid + rng.normal(0.0, 0.1 * spread, len(open_mid)))
    high = np.exp(high_mid) * (1.0 + spread)
    low = np.exp(low_mid) * (1.0 - spread)
    # High rounds up and low down, so the bar stays consistent on the tick grid.
    high = np.ceil(high / tick) * tick
    low = np.maximum(np.floor(low / tick) * tick, tick)
    close = np.clip(np.round(close / tick) * tick, low, high)
    open_ = np.clip(np.round(open_ / tick) * tick, low, high)
    return {"open": open_, "high": high, "low": low, "close": close}


def _volume(
    profile: SymbolProfile,
    rng: np.random.Generator,
    sigma: FloatArray,
    bar_shock: FloatArray,
    close: FloatArray,
    season: Seasonality,
) -> FloatArray:
    """Base-currency volume: busier in busy hours and when prices move."""
    activity = (sigma / profile.hourly_vol) * (0.6 + 0.4 * np.abs(bar_shock))
    noise = rng.lognormal(-(0.25**2) / 2.0, 0.25, len(sigma))  # mean 1
    quote = profile.daily_quote_volume / 24.0 * season.volume * activity * noise
    return np.round(quote / close, 3)


def _parquet_bytes(timestamps: IntArray, bars: dict[str, FloatArray]) -> bytes:
    columns: dict[str, pa.Array] = {"timestamp": pa.array(timestamps, pa.timestamp("ns", tz="UTC"))}
    columns.update(
        {
            name: pa.array(bars[name], pa.float64())
            for name in ("open", "high", "low", "close", "volume")
        }
    )
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table(columns), sink, compression="lz4")
    return bytes(sink.getvalue().to_pybytes())


def _readme(params: dict[str, Any], profiles: list[SymbolProfile]) -> str:
    lines = [
        "retrainer demo universe: synthetic hourly OHLCV bars (not market data).",
        "",
        f"Parameters: {json.dumps(params, sort_keys=True)}",
        "One <TICKER>.parquet per symbol: timestamp (UTC, bar open), open, high, low, close,",
        "volume (base currency). Stochastic volatility, jumps, a market factor, a weak",
        "per-symbol short-horizon predictability, bid-ask spreads in the highs and lows,",
        "and Zipf-like volumes. Regenerate with retrainer.base.demo_data.write_demo_universe.",
        "",
        "ticker          start_price  daily_quote_volume  half_spread_bps  annual_vol",
    ]
    for p in profiles:
        annual_vol = p.hourly_vol * math.sqrt(HOURS_PER_YEAR)
        lines.append(
            f"{p.ticker:<14} {p.start_price:>12.6g} {p.daily_quote_volume:>19.4g} "
            f"{p.half_spread * 1e4:>16.2f} {annual_vol:>11.2f}"
        )
    return "\n".join(lines) + "\n"
