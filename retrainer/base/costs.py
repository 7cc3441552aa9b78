"""Per-symbol trading costs: fees from the config, half-spread from the symbol's own bars."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class SymbolCosts:
    symbol: str
    taker_fee_bps: float
    maker_fee_bps: float
    half_spread_bps: float  # Corwin-Schultz estimate, clipped at 0
    spread_bars: int  # how many bars the estimate used

    @property
    def cost_per_turnover_bps(self) -> float:
        """What one unit of position change costs when crossing the spread as a taker."""
        return self.taker_fee_bps + self.half_spread_bps

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cost_per_turnover_bps": self.cost_per_turnover_bps}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SymbolCosts:
        return cls(
            symbol=str(raw["symbol"]),
            taker_fee_bps=float(raw["taker_fee_bps"]),
            maker_fee_bps=float(raw["maker_fee_bps"]),
            half_spread_bps=float(raw["half_spread_bps"]),
            spread_bars=int(raw["spread_bars"]),
        )


def corwin_schultz_half_spread_bps(
    high: npt.NDArray[np.float64], low: npt.NDArray[np.float64]
) -> tuple[float, int]:
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

    Negative per-pair estimates are set to 0 (the paper's usual practice) before the mean
    over pairs. Pairs with a non-finite, non-positive or inverted bar are left out.
    Returns (S / 2 in bps, the number of pairs used); (0.0, 0) when there is no pair.
    """
    import numpy as np

    high = np.asarray(high, dtype=np.float64)
    low = np.asarray(low, dtype=np.float64)
    if high.shape != low.shape or high.ndim != 1:
        raise ValueError("high and low must be 1-D arrays of the same length")
    usable_bar = np.isfinite(high) & np.isfinite(low) & (low > 0) & (high >= low)
    usable = usable_bar[:-1] & usable_bar[1:]
    if not usable.any():
        return 0.0, 0
    h0, h1, l0, l1 = high[:-1][usable], high[1:][usable], low[:-1][usable], low[1:][usable]
    beta = np.log(h0 / l0) ** 2 + np.log(h1 / l1) ** 2
    gamma = np.log(np.maximum(h0, h1) / np.minimum(l0, l1)) ** 2
    alpha = (np.sqrt(2.0 * beta) - np.sqrt(beta)) / _CS_K - np.sqrt(gamma / _CS_K)
    spread = 2.0 * np.expm1(alpha) / (1.0 + np.exp(alpha))
    half_spread = float(np.mean(np.maximum(spread, 0.0))) / 2.0
    return half_spread * BPS, int(usable.sum())


def resolve_costs(symbol: str, frame: pd.DataFrame, settings: CostSettings) -> SymbolCosts:
    """Fees from the settings (per-symbol overrides win), spread from the recent bars."""
    high, low = _recent_high_low(frame, settings.spread_window_days)
    return _costs(symbol, high, low, settings)


def resolve_costs_from_arrays(
    symbol: str,
    timestamps_ns: npt.NDArray[np.int64],
    high: npt.NDArray[np.float64],
    low: npt.NDArray[np.float64],
    settings: CostSettings,
) -> SymbolCosts:
    """resolve_costs from data.read_ohlcv's arrays, without a DataFrame."""
    if len(timestamps_ns) == 0:
        return _costs(symbol, high, low, settings)
    cutoff = timestamps_ns.max() - settings.spread_window_days * 86_400 * 10**9
    keep = timestamps_ns > cutoff
    return _costs(symbol, high[keep], low[keep], settings)


def _costs(
    symbol: str, high: npt.NDArray[np.float64], low: npt.NDArray[np.float64], settings: CostSettings
) -> SymbolCosts:
    override = _override_for(symbol, settings)
    taker, maker = settings.taker_fee_bps, settings.maker_fee_bps
    if override is not None and override.taker_fee_bps is not None:
        taker = override.taker_fee_bps
    if override is not None and override.maker_fee_bps is not None:
        maker = override.maker_fee_bps
    half_spread_bps, pairs = corwin_schultz_half_spread_bps(high, low)
    return SymbolCosts(
        symbol=symbol,
        taker_fee_bps=float(taker),
        maker_fee_bps=float(maker),
        half_spread_bps=half_spread_bps,
        spread_bars=pairs + 1 if pairs else 0,
    )


def _override_for(symbol: str, settings: CostSettings) -> FeeOverride | None:
    # Config keys are written by hand: match them regardless of case.
    if symbol in settings.overrides:
        return settings.overrides[symbol]
    by_upper = {name.upper(): fees for name, fees in settings.overrides.items()}
    return by_upper.get(symbol.upper())


def _recent_high_low(
    frame: pd.DataFrame, days: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """high and low of the bars within `days` days of the frame's latest timestamp."""
    import numpy as np

    high = frame["high"].to_numpy(dtype=np.float64)
    low = frame["low"].to_numpy(dtype=np.float64)
    if len(frame) == 0:
        return high, low
    timestamps = frame["timestamp"].to_numpy(dtype="datetime64[ns]")
    cutoff = timestamps.max() - np.timedelta64(days, "D")
    keep = timestamps > cutoff
    return high[keep], low[keep]
