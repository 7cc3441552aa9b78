"""Quantile forecasts scored: pinball loss, interval coverage, and skill over a naive baseline.

Pure numpy. Each horizon is scored on its own rows (a backtest's last rows have no realised
value at the longer horizons): `realised[h]` is an (n_h,) array, `forecast[h]` and
`baseline[h]` are (n_h, len(quantiles)) arrays of the same rows. Undefined figures (no
rows, a zero baseline) are NaN; the caller makes them JSON-safe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

# Two configured levels q and 1 - q pair into a central interval when they match this closely.
_PAIR_TOLERANCE = 1e-9


def level_key(q: float) -> str:
    """A quantile level as metric keys spell it: 0.05 -> "0.05" (the shortest exact form)."""
    return repr(float(q))


def pinball(realised: np.ndarray, forecast: np.ndarray, q: float) -> float:
    """Mean pinball (quantile) loss of forecasts of the q-quantile: q·(y − f) when y ≥ f,
    (1 − q)·(f − y) otherwise. NaN without rows."""
    y = np.asarray(realised, dtype=np.float64)
    f = np.asarray(forecast, dtype=np.float64)
    if y.size == 0:
        return math.nan
    diff = y - f
    return float(np.mean(np.maximum(q * diff, (q - 1.0) * diff)))


def coverage(realised: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Share of realised values inside [low, high]; NaN without rows."""
    y = np.asarray(realised, dtype=np.float64)
    if y.size == 0:
        return math.nan
    return float(np.mean((y >= low) & (y <= high)))


def central_intervals(quantiles: Sequence[float]) -> list[tuple[int, int]]:
    """Index pairs (i, j) of levels q_i < 0.5 and q_j = 1 - q_i: the central intervals whose
    nominal coverage is q_j - q_i (0.05 and 0.95: 90 %). Levels without a partner are
    scored by pinball loss only."""
    pairs = []
    for i, low in enumerate(quantiles):
        if low >= 0.5:
            continue
        for j, high in enumerate(quantiles):
            if abs(high - (1.0 - low)) <= _PAIR_TOLERANCE:
                pairs.append((i, j))
    return pairs


def crossed_rows(forecast: np.ndarray) -> int:
    """Rows whose quantile forecasts are not in increasing order of level."""
    if forecast.shape[0] == 0 or forecast.shape[1] < 2:
        return 0
    return int(np.sum(np.any(np.diff(forecast, axis=1) < 0, axis=1)))


def unconditional_quantiles(targets: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """The naive baseline: the empirical quantiles of a horizon's training targets
    (linear interpolation), the same forecast at every bar."""
    values = np.asarray(targets, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return np.full(len(quantiles), math.nan)
    return np.quantile(values, np.asarray(quantiles, dtype=np.float64))


def quantile_scores(
    quantiles: Sequence[float],
    horizons: Sequence[int],
    realised: Mapping[int, np.ndarray],
    forecast: Mapping[int, np.ndarray],
    baseline: Mapping[int, np.ndarray],
) -> dict[str, Any]:
    """The metrics of quantile forecasts, per level and horizon and on average.

    pinball_<q>_h<h>, pinball_h<h>, pinball_mean (over every level and horizon: each
    horizon weighs alike whatever its rows), baseline_pinball_h<h>, baseline_pinball_mean,
    pinball_skill_h<h> and pinball_skill (1 − model / baseline: above 0 beats the
    baseline), coverage_<lo>_<hi>_h<h> with coverage_nominal_<lo>_<hi>,
    baseline_coverage_<lo>_<hi>_h<h>, scored_rows_h<h>, crossed_rows.
    """
    out: dict[str, Any] = {}
    model_means, baseline_means = [], []
    crossed = 0
    pairs = central_intervals(quantiles)
    for h in horizons:
        y, f, b = realised[h], forecast[h], baseline[h]
        losses = [pinball(y, f[:, k], q) for k, q in enumerate(quantiles)]
        base = [pinball(y, b[:, k], q) for k, q in enumerate(quantiles)]
        for q, loss in zip(quantiles, losses, strict=True):
            out[f"pinball_{level_key(q)}_h{h}"] = loss
        model_h, baseline_h = _mean(losses), _mean(base)
        out[f"pinball_h{h}"] = model_h
        out[f"baseline_pinball_h{h}"] = baseline_h
        out[f"pinball_skill_h{h}"] = skill(model_h, baseline_h)
        model_means.append(model_h)
        baseline_means.append(baseline_h)
        for i, j in pairs:
            name = f"{level_key(quantiles[i])}_{level_key(quantiles[j])}"
            out[f"coverage_{name}_h{h}"] = coverage(y, f[:, i], f[:, j])
            out[f"baseline_coverage_{name}_h{h}"] = coverage(y, b[:, i], b[:, j])
        out[f"scored_rows_h{h}"] = len(y)
        crossed += crossed_rows(f)
    for i, j in pairs:
        name = f"{level_key(quantiles[i])}_{level_key(quantiles[j])}"
        out[f"coverage_nominal_{name}"] = round(quantiles[j] - quantiles[i], 12)
    out["pinball_mean"] = _mean(model_means)
    out["baseline_pinball_mean"] = _mean(baseline_means)
    out["pinball_skill"] = skill(out["pinball_mean"], out["baseline_pinball_mean"])
    out["crossed_rows"] = crossed
    return out


def skill(model_loss: float, baseline_loss: float) -> float:
    """1 − model / baseline: 0 is the baseline's loss, 1 a perfect forecast."""
    if not (math.isfinite(model_loss) and math.isfinite(baseline_loss)) or baseline_loss <= 0:
        return math.nan
    return 1.0 - model_loss / baseline_loss


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan
