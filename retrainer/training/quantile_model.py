"""A small MLP with a multi-quantile head, fitted on the pinball loss, deterministically.

One trunk of hidden layers, one linear head of len(horizons) × len(quantiles) outputs. The
quantiles cannot cross, by construction: per horizon the lowest level's output is free and
each next level adds softplus(delta) ≥ 0 to the one below. Targets are standardised per
horizon on the training rows (a 24-bar return is ~5 times a 1-bar one): the loss weighs the
horizons alike, and the positive scale keeps the order when predictions are scaled back.

Determinism follows model.py: seeded generators for the init, the batch order and the
dropout masks, deterministic algorithms, one compute thread by default.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from retrainer.training.model import (
    Adam,
    FitResult,
    Standardiser,
    deterministic_torch,
    hidden_layers,
    tensor_on,
    torch_threads,
    train_with_early_stopping,
)
from retrainer.training.quantile_params import QuantileParams

CHECKPOINT_FORMAT = "retrainer.quantile_mlp/1"
MODEL_NAME = "quantile_mlp"
_MIN_GAP = 1e-3  # standard units: two levels' starting quantiles never coincide
_SOFTPLUS_LINEAR = 20.0


@dataclass(frozen=True)
class TargetScaler(Standardiser):
    """Per-horizon mean and std of the training targets (float64): a Standardiser of the
    (rows, horizons) targets, that also maps quantiles back to log returns."""

    def inverse(self, scaled: np.ndarray) -> np.ndarray:
        """(rows, horizons, quantiles) in standard units back to log returns."""
        values: np.ndarray = scaled.astype(np.float64) * self.std[None, :, None]
        shifted: np.ndarray = values + self.mean[None, :, None]
        return shifted


class QuantileMLP(nn.Module):
    def __init__(
        self,
        n_features: int,
        hidden_sizes: Sequence[int],
        dropout: float,
        n_horizons: int,
        n_quantiles: int,
        dropout_generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        layers, width = hidden_layers(n_features, hidden_sizes, dropout, dropout_generator)
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_horizons * n_quantiles)
        self.n_horizons, self.n_quantiles = n_horizons, n_quantiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Quantiles in standard units, shape (rows, horizons, quantiles), increasing along
        the last axis."""
        raw = self.head(self.trunk(x)).reshape(-1, self.n_horizons, self.n_quantiles)
        steps = nn.functional.softplus(raw[..., 1:])
        # A running sum by hand, not torch.cumsum: elementwise adds are deterministic on
        # every device, forward and backward.
        levels = [raw[..., 0]]
        for k in range(self.n_quantiles - 1):
            levels.append(levels[-1] + steps[..., k])
        return torch.stack(levels, dim=-1)


def empirical_quantiles(y: np.ndarray, quantiles: Sequence[float]) -> np.ndarray:
    """(horizons, quantiles): each column's empirical quantiles (the naive baseline's)."""
    values: np.ndarray = np.quantile(y.astype(np.float64), np.asarray(quantiles), axis=0).T
    return values


def start_at_quantiles(model: QuantileMLP, start: np.ndarray) -> None:
    """Set the head's biases so that, but for the weights' small part, the net starts at
    `start` (horizons, quantiles): the naive baseline, which it then learns to condition.
    The tails' pinball gradients are small (q or 1 - q), and start far off they are
    still short of their level when early stopping ends the fit."""
    gaps = np.maximum(np.diff(start, axis=1), _MIN_GAP)
    # softplus^-1(g) = log(expm1(g)); for the large gaps that equal g within float32.
    deltas = np.where(
        gaps > _SOFTPLUS_LINEAR, gaps, np.log(np.expm1(np.minimum(gaps, _SOFTPLUS_LINEAR)))
    )
    bias = np.concatenate([start[:, :1], deltas], axis=1).reshape(-1)
    with torch.no_grad():
        model.head.bias.copy_(torch.from_numpy(bias.astype(np.float32)))


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Mean pinball loss over rows, horizons and levels; pred (n, H, Q), target (n, H)."""
    diff = target.unsqueeze(-1) - pred
    return torch.maximum(levels * diff, (levels - 1.0) * diff).mean()


QuantileFit = FitResult[QuantileMLP]


def fit(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    params: QuantileParams,
    seed: int,
    device: str,
) -> QuantileFit:
    """Adam on the pinball loss with early stopping on the validation pinball; the best
    epoch's weights kept. `*_x` standardised float32, `*_y` (rows, horizons) standardised."""
    dev = torch.device(device)
    with deterministic_torch(seed, dev), torch_threads(params.compute_threads):
        # Seeded apart from the init RNG: the init and the batch order / masks do not
        # share a stream.
        batch_generator = torch.Generator().manual_seed(seed + 1)
        dropout_generator = torch.Generator(device=dev).manual_seed(seed + 2)
        model = QuantileMLP(
            train_x.shape[1],
            params.hidden_sizes,
            params.dropout,
            len(params.horizons),
            len(params.quantiles),
            dropout_generator,
        )
        start_at_quantiles(model, empirical_quantiles(train_y, params.quantiles))
        model.to(dev)
        levels = torch.tensor(params.quantiles, dtype=torch.float32, device=dev)
        optimiser = Adam(
            model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
        )
        return train_with_early_stopping(
            model,
            optimiser,
            lambda pred, target: pinball_loss(pred, target, levels),
            (tensor_on(train_x, dev), tensor_on(train_y, dev)),
            (tensor_on(val_x, dev), tensor_on(val_y, dev)),
            params,
            batch_generator,
        )


def predict_scaled(
    model: QuantileMLP, x: np.ndarray, device: str, threads: int | None = 1
) -> np.ndarray:
    """Quantiles in standard units, (rows, horizons, quantiles) float64."""
    dev = torch.device(device)
    model.to(dev).eval()
    with torch.no_grad(), torch_threads(threads):
        out = model(tensor_on(x, dev))
    values: np.ndarray = out.double().cpu().numpy()
    return values


def checkpoint_bytes(
    model: QuantileMLP,
    standardiser: Standardiser,
    scaler: TargetScaler,
    features: Sequence[str],
    params: QuantileParams,
) -> bytes:
    """torch.save of the weights (on CPU) with everything needed to predict again."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "feature_names": list(features),
        "mean": torch.from_numpy(standardiser.mean.copy()),
        "std": torch.from_numpy(standardiser.std.copy()),
        "target_mean": torch.from_numpy(scaler.mean.copy()),
        "target_std": torch.from_numpy(scaler.std.copy()),
        # JSON text: weights-only unpickling reads strings, and the params stay exact.
        "params": json.dumps(params.model_dump(mode="json"), sort_keys=True),
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class QuantileCheckpoint:
    model: QuantileMLP
    standardiser: Standardiser
    scaler: TargetScaler
    feature_names: list[str]
    params: QuantileParams

    def predict(self, x: np.ndarray, device: str = "cpu") -> np.ndarray:
        """Log-return quantiles (rows, horizons, quantiles) for raw feature rows."""
        scaled = predict_scaled(
            self.model, self.standardiser.transform(x), device, self.params.compute_threads
        )
        return self.scaler.inverse(scaled)


def load_checkpoint(data: bytes) -> QuantileCheckpoint:
    """Rebuild the model from `model.bin`'s bytes (weights-only unpickling)."""
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a {CHECKPOINT_FORMAT} checkpoint")
    params = QuantileParams.model_validate(json.loads(payload["params"]))
    names = [str(n) for n in payload["feature_names"]]
    model = QuantileMLP(
        len(names), params.hidden_sizes, params.dropout, len(params.horizons), len(params.quantiles)
    )
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return QuantileCheckpoint(
        model=model,
        standardiser=Standardiser(mean=payload["mean"].numpy(), std=payload["std"].numpy()),
        scaler=TargetScaler(mean=payload["target_mean"].numpy(), std=payload["target_std"].numpy()),
        feature_names=names,
        params=params,
    )
