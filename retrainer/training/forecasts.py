"""Out-of-sample forecasts: one walk-forward window of a backtest, and the rows it forecasts.

A backtest (`retrainer backtest`) cuts each symbol's bars into windows. A window's trainer
fits on bars up to `train_last` (its labels included: no training row's horizon may reach
past that bar), then forecasts at every bar from `forecast_first` to `forecast_last`, which
lie after it by at least the embargo. It writes those rows with `TrainContext.
write_forecasts` as `forecasts.parquet`, one row per (time, quantile, horizon):

    time          the bar a forecast is made at (UTC): it uses bars up to it, no later
    symbol        the symbol
    model         what made it (the trainer's name for its model)
    quantile      the quantile level forecast, or null for a point or probability forecast
    horizon       bars ahead
    window_start  the first bar the window's fit used
    window_end    the last bar the window's fit used, labels included (< every `time`)
    forecast      the forecast value (a return quantile, or P(up) for a direction model)
    realised      what happened: the log return over the horizon, null past the data's end

and optionally `baseline` (a naive forecast of the same thing, from the training span
only), `position` (the strategy's position at that bar) and `next_return` (the next
bar's log return, what that position earns). The head concatenates the windows of a
symbol and scores them with the trainer's `score_forecasts` hook.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FORECASTS_FILE = "forecasts.parquet"
FORECAST_COLUMNS = (
    "time",
    "symbol",
    "model",
    "quantile",
    "horizon",
    "window_start",
    "window_end",
    "forecast",
    "realised",
)
OPTIONAL_COLUMNS = ("baseline", "position", "next_return")
_TIME_COLUMNS = ("time", "window_start", "window_end")
_FLOAT_COLUMNS = ("quantile", "forecast", "realised", *OPTIONAL_COLUMNS)


class ForecastError(ValueError):
    """Forecast rows that break the schema or reach outside their window."""


@dataclass(frozen=True)
class ForecastWindow:
    """One walk-forward step of one symbol: fit on bars [train_first, train_last] (labels
    included), forecast at each bar of [forecast_first, forecast_last]. ISO UTC times of
    bars in the symbol's data; `index` counts the symbol's windows from 0."""

    index: int
    train_first: str
    train_last: str
    forecast_first: str
    forecast_last: str
    embargo_bars: int
    train_bars: int  # bars in [train_first, train_last]
    forecast_bars: int  # bars in [forecast_first, forecast_last]

    @property
    def name(self) -> str:
        return f"w{self.index:04d}"

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ForecastWindow:
        return cls(**raw)


def checked_forecasts(frame: pd.DataFrame, window: ForecastWindow, symbol: str) -> pd.DataFrame:
    """The rows with the schema's dtypes, or ForecastError: a column missing, a row outside
    the window's forecast span, or a fit that reached past a forecast's time."""
    import pandas as pd

    missing = [c for c in FORECAST_COLUMNS if c not in frame.columns]
    if missing:
        raise ForecastError(f"forecasts lack columns {missing}")
    columns = [*FORECAST_COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in frame.columns)]
    out = frame[columns].reset_index(drop=True).copy()
    for column in _TIME_COLUMNS:
        out[column] = pd.to_datetime(out[column], utc=True).dt.as_unit("ns")
    for column in _FLOAT_COLUMNS:
        if column in out.columns:
            out[column] = out[column].astype("float64")
    out["horizon"] = out["horizon"].astype("int64")
    out["symbol"] = out["symbol"].astype(str)
    out["model"] = out["model"].astype(str)
    if (out["symbol"] != symbol).any():
        raise ForecastError(f"forecasts name a symbol other than {symbol}")
    if len(out):
        first = pd.Timestamp(window.forecast_first)
        last = pd.Timestamp(window.forecast_last)
        outside = (out["time"] < first) | (out["time"] > last)
        if outside.any():
            raise ForecastError(
                f"{int(outside.sum())} forecast rows lie outside the window's forecast span "
                f"{window.forecast_first} .. {window.forecast_last}"
            )
        if (out["window_end"] >= out["time"]).any():
            raise ForecastError("a forecast's window_end is not before its time: the fit saw it")
        if (out["window_end"] > pd.Timestamp(window.train_last)).any():
            raise ForecastError("a forecast's window_end lies past the window's train_last")
        quantiles = out["quantile"].dropna()
        if ((quantiles <= 0) | (quantiles >= 1)).any():
            raise ForecastError("a forecast's quantile lies outside (0, 1)")
    return out.sort_values(["time", "horizon", "quantile"], kind="stable").reset_index(drop=True)


def forecasts_to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()
