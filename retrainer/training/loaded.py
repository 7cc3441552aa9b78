"""A model the default trainer wrote, loaded to predict: weights, features, metadata.

    model = train.load(Path("models/BTCUSDT/20261123T020000Z"))
    p_up = model.predict_proba(bars)   # P(up over horizon_bars) per bar, by timestamp

torch is imported when a model is loaded, not with this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from retrainer.training.features import TIMESTAMP, feature_rows
from retrainer.training.params import TrainerParams

if TYPE_CHECKING:
    from retrainer.training.model import Checkpoint

PREDICTION = "p_up"


@dataclass(frozen=True)
class LoadedModel:
    params: TrainerParams
    checkpoint: Checkpoint
    config: dict[str, Any] = field(default_factory=dict)  # its config.json
    metrics: dict[str, Any] = field(default_factory=dict)  # its metrics.json
    device: str = "cpu"

    @property
    def feature_names(self) -> list[str]:
        return list(self.checkpoint.feature_names)

    def features(self, bars: pd.DataFrame) -> pd.DataFrame:
        """Timestamp and the model's inputs for every bar with complete feature history
        (the latest bars included), as the model was trained on them."""
        rows = feature_rows(bars, self.params)
        missing = [name for name in self.feature_names if name not in rows.columns]
        if missing:
            raise ValueError(f"the model's features {missing} are not built by its params")
        return rows[[TIMESTAMP, *self.feature_names]]

    def predict_proba(self, bars: pd.DataFrame) -> pd.Series:
        """P(up over horizon_bars) per bar with complete feature history, by timestamp."""
        rows = self.features(bars)
        prob = self.predict_rows(rows)
        index = pd.DatetimeIndex(rows[TIMESTAMP], name=TIMESTAMP)
        return pd.Series(prob, index=index, name=PREDICTION)

    def predict_rows(self, rows: pd.DataFrame) -> np.ndarray:
        """P(up) for rows that already hold the model's feature columns."""
        from retrainer.training.model import predict_proba

        if len(rows) == 0:
            return np.empty(0, dtype=np.float64)
        x = self.checkpoint.standardiser.transform(rows[self.feature_names].to_numpy(np.float64))
        return predict_proba(
            self.checkpoint.model, x, self.device, threads=self.params.compute_threads
        )
