"""Per-symbol trading costs: fees by asset class, half-spread from the symbol's own bars."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    # Type-only: every attempt's process imports this module for SymbolCosts, and need not
    # import pydantic, pandas or numpy (numpy alone makes each fork and exit dearer).
    import numpy as np
    import numpy.typing as npt
    import pandas as pd

    from retrainer.base.config import CostSettings, FeeOverride

BPS = 1e4
# 3 - 2*sqrt(2): the constant k of Corwin and Schultz (2012), eq. (14).
_CS_K = 3.0 - 2.0 * math.sqrt(2.0)
_NS_PER_DAY = 86_400 * 10**9


class HalfSpreadSource(StrEnum):
    CORWIN_SCHULTZ = "corwin_schultz"  # estimated from the window's high/low pairs
    DEFAULT = "default"  # too few usable pairs: the asset class's (or [costs]) default
    CONFIG = "config"  # [costs.overrides.SYMBOL] half_spread_bps


@dataclass(frozen=True)
class AssetClassDefaults:
    taker_fee_bps: float
    maker_fee_bps: float
    default_half_spread_bps: float  # when the bars cannot give an estimate
    tradable: bool = True


# Round, typical figures: a venue's own fees belong in [costs] or its overrides.
ASSET_CLASSES: dict[str, AssetClassDefaults] = {
    "crypto": AssetClassDefaults(
        taker_fee_bps=10.0, maker_fee_bps=2.0, default_half_spread_bps=5.0
    ),
    "equity": AssetClassDefaults(taker_fee_bps=0.5, maker_fee_bps=0.0, default_half_spread_bps=2.0),
    "fx": AssetClassDefaults(taker_fee_bps=0.0, maker_fee_bps=0.0, default_half_spread_bps=0.5),
    "futures": AssetClassDefaults(
        taker_fee_bps=0.5, maker_fee_bps=0.2, default_half_spread_bps=0.5
    ),
    "index": AssetClassDefaults(0.0, 0.0, default_half_spread_bps=0.0, tradable=False),
}


@dataclass(frozen=True)
class SymbolCosts:
    symbol: str
    taker_fee_bps: float
    maker_fee_bps: float
    half_spread_bps: float
    spread_bars: int  # how many bars the estimate used (0: none)
    half_spread_source: HalfSpreadSource = HalfSpreadSource.CORWIN_SCHULTZ
    asset_class: str = "crypto"
    tradable: bool = True  # False: gross figures only (an index)
    bars_per_year: float | None = None  # configured; None: the trainer observes it

    @property
    def cost_per_turnover_bps(self) -> float:
        """What one unit of position change costs when crossing the spread as a taker."""
        return self.taker_fee_bps + self.half_spread_bps

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "half_spread_source": str(self.half_spread_source),
            "cost_per_turnover_bps": self.cost_per_turnover_bps,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SymbolCosts:
        """Dicts written before the source, class, tradability and calendar were recorded
        load as what they were: a Corwin-Schultz estimate for a tradable crypto symbol."""
        bars_per_year = raw.get("bars_per_year")
        return cls(
            symbol=str(raw["symbol"]),
            taker_fee_bps=float(raw["taker_fee_bps"]),
            maker_fee_bps=float(raw["maker_fee_bps"]),
            half_spread_bps=float(raw["half_spread_bps"]),
            spread_bars=int(raw["spread_bars"]),
            half_spread_source=HalfSpreadSource(
                raw.get("half_spread_source", HalfSpreadSource.CORWIN_SCHULTZ)
            ),
            asset_class=str(raw.get("asset_class", "crypto")),
            tradable=bool(raw.get("tradable", True)),
            bars_per_year=None if bars_per_year is None else float(bars_per_year),
        )


@dataclass(frozen=True)
class SpreadEstimate:
    half_spread_bps: float  # the window's mean two-bar estimate, clipped at 0
    pairs: int  # usable two-bar pairs
    raw_half_spread_bps: float  # the mean before clipping (negative: volatility dominates)


def corwin_schultz_half_spread_bps(
    high: npt.NDArray[np.float64],
    low: npt.NDArray[np.float64],
    close: npt.NDArray[np.float64] | None = None,
) -> SpreadEstimate:
    """Half the bid-ask spread, in bps, estimated from consecutive bars' highs and lows.

    Corwin, S. A. and Schultz, P. (2012), "A Simple Way to Estimate Bid-Ask Spreads from
    Daily High and Low Prices", Journal of Finance 67(2), 719-760. A bar's high is mostly
    a buy at the ask and its low a sell at the bid, so the high/low ratio holds the
    spread plus volatility; volatility grows with the horizon and the spread does not, so
    comparing one-bar ranges (beta) with the two-bar range (gamma) separates them:

        beta  = ln(H_t/L_t)^2 + ln(H_t+1/L_t+1)^2
        gamma = ln(max(H_t, H_t+1) / min(L_t, L_t+1))^2
        alpha = (sqrt(2 beta) - sqrt(beta)) / (3 - 2 sqrt 2) - sqrt(gamma / (3 - 2 sqrt 2))
        S     = 2 (e^alpha - 1) / (1 + e^alpha)

    With `close`, the paper's overnight adjustment: when bar t+1's low is above bar t's
    close, bar t+1's high and low are shifted down by the gap (and up when its high is
    below that close), for that pair, so a gap between bars is not read as spread.

    Each pair's S is kept as it is, negatives too: most of a pair's S is noise from the
    volatility, and clipping pairs at 0 before averaging turns that noise into a spread
    of its own (what the estimator measured here before). The mean over the window is
    clipped at 0 instead. Bars that are non-finite, non-positive, flat (high == low) or
    inverted are left out with the pairs they are in.
    """
    import numpy as np

    high = np.asarray(high, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    if high.shape != low.shape or high.ndim != 1:
        raise ValueError("high and low must be 1-D arrays of the same length")
    usable_bar = np.isfinite(high) & np.isfinite(low) & (low > 0) & (high > low)
    h0, l0, h1, l1 = high[:-1], low[:-1], high[1:], low[1:]
    if close is not None:
        close = np.asarray(close, dtype=np.float64)
        if close.shape != high.shape:
            raise ValueError("close must have the length of high and low")
        usable_bar &= np.isfinite(close) & (close > 0)
        shift = _overnight_shift(close[:-1], h1, l1)
        h1, l1 = h1 + shift, l1 + shift
    usable = usable_bar[:-1] & usable_bar[1:]
    pairs = int(usable.sum())
    if pairs == 0:
        return SpreadEstimate(0.0, 0, 0.0)
    h0, l0, h1, l1 = h0[usable], l0[usable], h1[usable], l1[usable]
    beta = np.log(h0 / l0) ** 2 + np.log(h1 / l1) ** 2
    gamma = np.log(np.maximum(h0, h1) / np.minimum(l0, l1)) ** 2
    alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / _CS_K - np.sqrt(gamma / _CS_K)
    spread = 2.0 * np.expm1(alpha) / (1.0 + np.exp(alpha))
    raw_half_spread_bps = float(np.mean(spread)) / 2.0 * BPS
    return SpreadEstimate(max(raw_half_spread_bps, 0.0), pairs, raw_half_spread_bps)


def _overnight_shift(
    close_before: npt.NDArray[np.float64],
    high_after: npt.NDArray[np.float64],
    low_after: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """What to add to bar t+1's high and low: minus a gap up, plus a gap down."""
    import numpy as np

    with np.errstate(invalid="ignore"):  # NaN bars are left out of the pairs anyway
        gap_up = np.maximum(low_after - close_before, 0.0)
        gap_down = np.maximum(close_before - high_after, 0.0)
    shift: npt.NDArray[np.float64] = gap_down - gap_up
    return shift


def resolve_costs(symbol: str, frame: pd.DataFrame, settings: CostSettings) -> SymbolCosts:
    """resolve_costs_from_arrays from a validated frame."""
    import numpy as np

    timestamps = frame["timestamp"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    return resolve_costs_from_arrays(
        symbol,
        timestamps,
        frame["high"].to_numpy(dtype=np.float64),
        frame["low"].to_numpy(dtype=np.float64),
        settings,
        close=frame["close"].to_numpy(dtype=np.float64),
    )


def resolve_costs_from_arrays(
    symbol: str,
    timestamps_ns: npt.NDArray[np.int64],
    high: npt.NDArray[np.float64],
    low: npt.NDArray[np.float64],
    settings: CostSettings,
    *,
    close: npt.NDArray[np.float64] | None = None,
) -> SymbolCosts:
    """Fees by asset class (per-symbol overrides win), the half-spread from the recent
    bars (data.read_ohlcv's arrays: no DataFrame needed)."""
    override = _override_for(symbol, settings)
    asset_class = settings.asset_class
    if override is not None and override.asset_class is not None:
        asset_class = override.asset_class
    defaults = ASSET_CLASSES[asset_class]
    # [costs] fees and default half-spread are those of the default class's symbols.
    own_class = asset_class == settings.asset_class
    taker = _first(
        _overridden(override, "taker_fee_bps"),
        settings.taker_fee_bps if own_class else None,
        defaults.taker_fee_bps,
    )
    maker = _first(
        _overridden(override, "maker_fee_bps"),
        settings.maker_fee_bps if own_class else None,
        defaults.maker_fee_bps,
    )
    fallback = _first(
        settings.default_half_spread_bps if own_class else None, defaults.default_half_spread_bps
    )
    configured = _overridden(override, "half_spread_bps")
    if configured is not None:
        half_spread, bars, source = configured, 0, HalfSpreadSource.CONFIG
    else:
        keep = _window(timestamps_ns, settings.spread_window_days, settings.min_spread_pairs)
        estimate = corwin_schultz_half_spread_bps(
            high[keep], low[keep], None if close is None else close[keep]
        )
        bars = estimate.pairs + 1 if estimate.pairs else 0
        if estimate.pairs >= settings.min_spread_pairs:
            half_spread, source = estimate.half_spread_bps, HalfSpreadSource.CORWIN_SCHULTZ
        else:
            half_spread, source = fallback, HalfSpreadSource.DEFAULT
    tradable = defaults.tradable
    if override is not None and override.tradable is not None:
        tradable = override.tradable
    return SymbolCosts(
        symbol=symbol,
        taker_fee_bps=float(taker),
        maker_fee_bps=float(maker),
        half_spread_bps=float(half_spread),
        spread_bars=bars,
        half_spread_source=source,
        asset_class=asset_class,
        tradable=tradable,
        bars_per_year=_overridden(override, "bars_per_year"),
    )


def _overridden(override: FeeOverride | None, key: str) -> float | None:
    value: float | None = None if override is None else getattr(override, key)
    return value


def _first(*values: float | None) -> float:
    """The first value that is set (0 is a value, None is not)."""
    for value in values:
        if value is not None:
            return value
    raise ValueError("no value set")  # the class default is always last


def _window(timestamps_ns: npt.NDArray[np.int64], days: int, min_pairs: int) -> slice:
    """The bars within `days` of the latest one, and at least the last min_pairs + 1."""
    n = len(timestamps_ns)
    if n == 0:
        return slice(0, 0)
    cutoff = int(timestamps_ns[-1]) - days * _NS_PER_DAY
    # Validated bars are in time order: the first bar after the cutoff starts the window.
    first = int(n - (timestamps_ns > cutoff).sum())
    return slice(max(0, min(first, n - (min_pairs + 1))), n)


def _override_for(symbol: str, settings: CostSettings) -> FeeOverride | None:
    # Config keys are written by hand: match them regardless of case.
    if symbol in settings.overrides:
        return settings.overrides[symbol]
    by_upper = {name.upper(): override for name, override in settings.overrides.items()}
    return by_upper.get(symbol.upper())
