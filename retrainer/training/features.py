"""Features and target from validated OHLCV bars.

Every feature of row t uses bars 0..t only (shifts into the past, trailing windows,
recursive averages), so changing a future bar never changes a past feature row. Only the
label columns look ahead, by construction: `fwd_ret_1` (the next bar's log return, used by
the strategy evaluation), `fwd_ret_h` (the log return over `horizon_bars`) and `target`.

A forward return of exactly 0 is neither up nor down: such rows keep target 0 here, but
`has_direction` leaves them out of fitting and of the classification metrics (the
strategy still holds through them, and they are counted as zero_return_bars).
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd

from retrainer.training.params import TrainerParams

TIMESTAMP = "timestamp"
TARGET = "target"
FWD_RET_1 = "fwd_ret_1"
FWD_RET_H = "fwd_ret_h"
NON_FEATURE_COLUMNS = (TIMESTAMP, FWD_RET_1, FWD_RET_H, TARGET)
OHLCV_COLUMNS = ("open", "high", "low", "close", "volume")
_HOURS_PER_DAY = 24


def build_features(bars: pd.DataFrame, params: TrainerParams) -> pd.DataFrame:
    """One row per bar with complete history and a known target; timestamp kept first."""
    columns = _feature_columns(bars, params)
    log_close = _log_close(bars)
    columns[FWD_RET_1] = log_close.shift(-1) - log_close
    columns[FWD_RET_H] = log_close.shift(-params.horizon_bars) - log_close
    frame = pd.DataFrame(columns).dropna().reset_index(drop=True)
    frame[TARGET] = (frame[FWD_RET_H] > 0).astype("int8")
    return frame


def feature_rows(bars: pd.DataFrame, params: TrainerParams) -> pd.DataFrame:
    """The timestamp and features of every bar with complete history, the latest bars
    (whose target is not known yet) included: what a prediction needs."""
    return pd.DataFrame(_feature_columns(bars, params)).dropna().reset_index(drop=True)


def has_direction(frame: pd.DataFrame) -> pd.Series:
    """Rows whose forward return over the horizon is up or down (not exactly 0)."""
    directional: pd.Series = frame[FWD_RET_H] != 0
    return directional


def _log_close(bars: pd.DataFrame) -> pd.Series:
    close = bars["close"].astype("float64").to_numpy()
    return pd.Series(np.log(close), index=bars.index)


def _feature_columns(bars: pd.DataFrame, params: TrainerParams) -> dict[str, pd.Series]:
    close = bars["close"].astype("float64")
    log_close = _log_close(bars)
    ret_1 = log_close.diff()
    columns: dict[str, pd.Series] = {TIMESTAMP: as_utc(bars[TIMESTAMP])}
    for lag in params.return_lags:
        columns[f"ret_{lag}"] = log_close.diff(lag)
    for window in params.volatility_windows:
        columns[f"vol_{window}"] = ret_1.rolling(window, min_periods=window).std()
    columns["hl_range"] = (bars["high"] - bars["low"]) / close
    volume_z = volume_zscore(bars["volume"], params.volume_window)
    columns[f"volume_z_{params.volume_window}"] = volume_z
    columns[f"rsi_{params.rsi_window}"] = rsi_oscillator(ret_1, params.rsi_window)
    if params.hour_of_day:
        columns.update(hour_of_day(bars[TIMESTAMP]))
    return columns


def feature_names(frame: pd.DataFrame) -> list[str]:
    """The model's inputs, in column order: everything but the timestamp and the labels."""
    return [c for c in frame.columns if c not in NON_FEATURE_COLUMNS]


def volume_zscore(volume: pd.Series, window: int) -> pd.Series:
    """z-score of log volume against its trailing window; 0 where the window is flat."""
    log_volume = pd.Series(np.log1p(volume.astype("float64").to_numpy()), index=volume.index)
    rolling = log_volume.rolling(window, min_periods=window)
    mean, std = rolling.mean(), rolling.std()
    z = (log_volume - mean) / std.where(std > 0)
    # A flat window (std 0) is a real state, not missing data: keep the row.
    return z.where(std.isna() | (std > 0), 0.0)


def rsi_oscillator(ret_1: pd.Series, window: int) -> pd.Series:
    """Wilder's RSI rescaled to [-1, 1]: (gain - loss) / (gain + loss), 0 when both are 0."""
    gain = ret_1.clip(lower=0).ewm(alpha=1 / window, adjust=False, min_periods=window).mean()
    loss = (-ret_1).clip(lower=0).ewm(alpha=1 / window, adjust=False, min_periods=window).mean()
    total = gain + loss
    oscillator = (gain - loss) / total.where(total > 0)
    return oscillator.where(total.isna() | (total > 0), 0.0)


def hour_of_day(timestamps: pd.Series) -> dict[str, pd.Series]:
    """The UTC hour on the unit circle, so 23h and 0h are neighbours."""
    hours = as_utc(timestamps).dt.hour.astype("float64")
    angle = 2 * np.pi * hours / _HOURS_PER_DAY
    return {
        "hour_sin": pd.Series(np.sin(angle.to_numpy()), index=timestamps.index),
        "hour_cos": pd.Series(np.cos(angle.to_numpy()), index=timestamps.index),
    }


def as_utc(timestamps: pd.Series) -> pd.Series:
    """Validated bars are UTC; a naive column is taken as UTC rather than refused."""
    utc: pd.Series = (
        timestamps.dt.tz_localize("UTC")
        if timestamps.dt.tz is None
        else timestamps.dt.tz_convert("UTC")
    )
    return utc


def features_to_parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False, engine="pyarrow")
    return buffer.getvalue()


def features_from_parquet(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data), engine="pyarrow")
