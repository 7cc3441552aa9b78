"""The quantile trainer's parameters: `[trainer.params]` in the config, checked before a run.

This module must stay light (pydantic only): the scheduler imports it through the trainer
module to validate the config before anything starts. The features, the walk-forward split
and the optimiser take the default trainer's fields (params.py) with the same defaults.
"""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from retrainer.training.params import (
    HiddenSize,
    PositiveBars,
    TrainerParams,
    WindowBars,
)

_FRACTION_SUM_TOLERANCE = 1e-9
# Past a few dozen levels a quantile head is a density estimate, not what this trainer is for.
_MAX_QUANTILES = 49
_MAX_HORIZONS = 16
Horizon = Annotated[int, Field(ge=1, le=10_000)]


class QuantileParams(BaseModel):
    """Defaults suit a nightly CPU run: one symbol of ~17,500 hourly bars in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # What is forecast: these quantiles of the log return over each horizon (bars ahead).
    quantiles: tuple[float, ...] = Field(
        default=(0.05, 0.25, 0.5, 0.75, 0.95), min_length=1, max_length=_MAX_QUANTILES
    )
    horizons: tuple[Horizon, ...] = Field(
        default=(1, 4, 24), min_length=1, max_length=_MAX_HORIZONS
    )

    # Features: as the default trainer's.
    return_lags: tuple[PositiveBars, ...] = Field(default=(1, 2, 4, 8, 24), min_length=1)
    volatility_windows: tuple[WindowBars, ...] = Field(default=(24, 168), min_length=1)
    volume_window: WindowBars = 168
    rsi_window: WindowBars = 14
    hour_of_day: bool = True

    # Walk-forward split (a backtest uses train/val shares inside each window's training bars).
    train_fraction: float = Field(default=0.70, gt=0, lt=1)
    val_fraction: float = Field(default=0.15, gt=0, lt=1)
    test_fraction: float = Field(default=0.15, gt=0, lt=1)
    # Checked against horizons (declared above, so validated first) even when left out.
    embargo_bars: int = Field(default=24, ge=1, le=10_000, validate_default=True)

    # Model and optimisation.
    hidden_sizes: tuple[HiddenSize, ...] = Field(default=(64, 32), min_length=1, max_length=8)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=256, ge=1, le=1_000_000)
    max_epochs: int = Field(default=60, ge=1, le=10_000)
    patience_epochs: int = Field(default=6, ge=1, le=10_000)
    min_delta: float = Field(default=0.0, ge=0)
    # torch intra-op threads: 1 gives the same bits whatever the thread budget (model.py).
    compute_threads: int | None = Field(default=1, ge=1, le=1024)

    @field_validator("quantiles")
    @classmethod
    def _check_quantiles(cls, values: tuple[float, ...]) -> tuple[float, ...]:
        outside = [q for q in values if not 0.0 < q < 1.0]
        if outside:
            raise ValueError(f"quantiles must lie strictly inside (0, 1); outside it: {outside}")
        if len(set(values)) != len(values):
            raise ValueError(f"quantiles has duplicates: {list(values)}")
        if list(values) != sorted(values):
            raise ValueError(f"quantiles must be in increasing order: {list(values)}")
        return values

    @field_validator("horizons")
    @classmethod
    def _check_horizons(cls, values: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(values)) != len(values):
            raise ValueError(f"horizons has duplicates: {list(values)}")
        if list(values) != sorted(values):
            raise ValueError(f"horizons must be in increasing order: {list(values)}")
        return values

    @field_validator("embargo_bars")
    @classmethod
    def _check_embargo(cls, value: int, info: ValidationInfo) -> int:
        horizons = info.data.get("horizons")  # absent when horizons itself failed
        if horizons and value < max(horizons):
            # A training row's label looks max(horizons) bars ahead: a shorter gap would
            # let it see validation or test bars.
            raise ValueError(
                f"embargo_bars ({value}) must be >= the longest of horizons ({max(horizons)}): "
                "raise embargo_bars or shorten horizons"
            )
        return value

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if abs(total - 1.0) > _FRACTION_SUM_TOLERANCE:
            raise ValueError(f"train/val/test fractions must sum to 1 (got {total:g})")
        for name in ("return_lags", "volatility_windows"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {list(values)}")
        return self

    @property
    def max_horizon(self) -> int:
        return max(self.horizons)

    def feature_params(self) -> TrainerParams:
        """The default trainer's params that build the same features (features.py), with
        its single horizon set to the longest of ours."""
        return TrainerParams(
            horizon_bars=self.max_horizon,
            return_lags=self.return_lags,
            volatility_windows=self.volatility_windows,
            volume_window=self.volume_window,
            rsi_window=self.rsi_window,
            hour_of_day=self.hour_of_day,
            train_fraction=self.train_fraction,
            val_fraction=self.val_fraction,
            test_fraction=self.test_fraction,
            embargo_bars=self.embargo_bars,
            compute_threads=self.compute_threads,
        )
