"""Per-symbol trading costs: fees from the config, half-spread from the symbol's own bars."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


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
