"""The default trainer's parameters: `[trainer.params]` in the config, checked before a run.

This module must stay light (pydantic only): the scheduler imports it through the trainer
module to validate the config before anything starts.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

PositiveBars = Annotated[int, Field(ge=1, le=10_000)]
WindowBars = Annotated[int, Field(ge=2, le=10_000)]
HiddenSize = Annotated[int, Field(ge=1, le=4096)]
_FRACTION_SUM_TOLERANCE = 1e-9


class TrainerParams(BaseModel):
    """Defaults suit a nightly CPU run: one symbol of ~17,500 hourly bars in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Features and target.
    horizon_bars: PositiveBars = 4
    return_lags: tuple[PositiveBars, ...] = Field(default=(1, 2, 4, 8, 24), min_length=1)
    volatility_windows: tuple[WindowBars, ...] = Field(default=(24, 168), min_length=1)
    volume_window: WindowBars = 168
    rsi_window: WindowBars = 14
    hour_of_day: bool = True

    # Walk-forward split.
    train_fraction: float = Field(default=0.70, gt=0, lt=1)
    val_fraction: float = Field(default=0.15, gt=0, lt=1)
    test_fraction: float = Field(default=0.15, gt=0, lt=1)
    embargo_bars: int = Field(default=24, ge=1, le=10_000)

    # Model and optimisation.
    hidden_sizes: tuple[HiddenSize, ...] = Field(default=(64, 32), min_length=1, max_length=8)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    learning_rate: float = Field(default=1e-3, gt=0, le=1)
    weight_decay: float = Field(default=0.0, ge=0)
    batch_size: int = Field(default=256, ge=1, le=1_000_000)
    max_epochs: int = Field(default=60, ge=1, le=10_000)
    patience_epochs: int = Field(default=6, ge=1, le=10_000)
    min_delta: float = Field(default=0.0, ge=0)
    # torch intra-op threads while fitting and predicting. 1 gives the same bits whatever
    # the scheduler's thread budget (MKL's float32 GEMM on Intel CPUs rounds differently
    # with the thread count); None uses the budget: faster for wide nets, and metrics may
    # then differ between the sequential, parallel and hybrid modes.
    compute_threads: int | None = Field(default=1, ge=1, le=1024)

    # The test-span strategy (docs/trainer.md). cost_aware: take a side only when the
    # expected return over the horizon clears edge_cost_multiple x the cost per unit of
    # turnover (2: a round trip), and hold it horizon_bars bars; sign: long or short on
    # P(up) > 0.5 at every bar.
    strategy: Literal["cost_aware", "sign"] = "cost_aware"
    edge_cost_multiple: float = Field(default=2.0, ge=0, le=1_000)

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        total = self.train_fraction + self.val_fraction + self.test_fraction
        if abs(total - 1.0) > _FRACTION_SUM_TOLERANCE:
            raise ValueError(f"train/val/test fractions must sum to 1 (got {total:g})")
        if self.embargo_bars < self.horizon_bars:
            # A training row's target looks horizon_bars ahead: a shorter gap would let
            # it see validation or test bars.
            raise ValueError(
                f"embargo_bars ({self.embargo_bars}) must be >= horizon_bars ({self.horizon_bars})"
            )
        for name in ("return_lags", "volatility_windows"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"{name} has duplicates: {list(values)}")
        return self
