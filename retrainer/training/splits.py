"""Walk-forward split in time order: train, embargo, validation, embargo, test.

A row's target looks `horizon_bars` ahead, so the last training row's target window ends
`horizon_bars - 1` bars after it. An embargo of at least `horizon_bars` rows between spans
keeps every training target out of the validation and test bars (and every validation
target out of the test bars).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from retrainer.base.clock import iso

SPAN_NAMES = ("train", "val", "test")


class SplitError(ValueError):
    """Too few rows (or bad settings) to cut three non-empty, embargoed spans."""


@dataclass(frozen=True)
class Span:
    """Half-open row range [start, stop) with the timestamps of its first and last row."""

    start: int
    stop: int
    first_timestamp: str
    last_timestamp: str

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict[str, Any]:
        return {
            "start": self.start,
            "stop": self.stop,
            "rows": self.rows,
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Span:
        return cls(
            start=int(raw["start"]),
            stop=int(raw["stop"]),
            first_timestamp=str(raw["first_timestamp"]),
            last_timestamp=str(raw["last_timestamp"]),
        )


@dataclass(frozen=True)
class WalkForwardSplit:
    n_rows: int
    horizon_bars: int
    embargo_bars: int
    train: Span
    val: Span
    test: Span

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "horizon_bars": self.horizon_bars,
            "embargo_bars": self.embargo_bars,
            **{name: getattr(self, name).to_dict() for name in SPAN_NAMES},
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WalkForwardSplit:
        return cls(
            n_rows=int(raw["n_rows"]),
            horizon_bars=int(raw["horizon_bars"]),
            embargo_bars=int(raw["embargo_bars"]),
            train=Span.from_dict(raw["train"]),
            val=Span.from_dict(raw["val"]),
            test=Span.from_dict(raw["test"]),
        )

    def to_json_bytes(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes) -> WalkForwardSplit:
        return cls.from_dict(json.loads(data.decode("utf-8")))


def walk_forward_split(
    timestamps: pd.Series,
    fractions: Sequence[float],
    horizon_bars: int,
    embargo_bars: int,
) -> WalkForwardSplit:
    """Cut rows in time order; the fractions share the rows left after the two embargoes."""
    if embargo_bars < horizon_bars:
        raise SplitError(f"embargo_bars ({embargo_bars}) must be >= horizon_bars ({horizon_bars})")
    n_rows = len(timestamps)
    n_train, n_val, n_test = span_sizes(n_rows - 2 * embargo_bars, fractions)
    if min(n_train, n_val, n_test) < 1:
        raise SplitError(
            f"{n_rows} feature rows are too few for train/val/test spans "
            f"with an embargo of {embargo_bars} bars"
        )
    val_start = n_train + embargo_bars
    test_start = val_start + n_val + embargo_bars
    bounds = ((0, n_train), (val_start, val_start + n_val), (test_start, n_rows))
    train, val, test = (_span(timestamps, start, stop) for start, stop in bounds)
    return WalkForwardSplit(n_rows, horizon_bars, embargo_bars, train, val, test)


def span_sizes(usable_rows: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Train and val get their floor share; test takes the rest (so no row is lost)."""
    train_fraction, val_fraction, _ = fractions
    if usable_rows <= 0:
        return 0, 0, 0
    n_train = int(usable_rows * train_fraction)
    n_val = int(usable_rows * val_fraction)
    return n_train, n_val, usable_rows - n_train - n_val


def _span(timestamps: pd.Series, start: int, stop: int) -> Span:
    first, last = timestamps.iloc[start], timestamps.iloc[stop - 1]
    return Span(start, stop, iso(first.to_pydatetime()), iso(last.to_pydatetime()))
