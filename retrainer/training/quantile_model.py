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
from typing import Any

import numpy as np
import torch
from torch import nn

from retrainer.training.model import (
    Adam,
    EpochLoss,
    SeededDropout,
    Standardiser,
    deterministic_torch,
    torch_threads,
)
from retrainer.training.quantile_params import QuantileParams

CHECKPOINT_FORMAT = "retrainer.quantile_mlp/1"
MODEL_NAME = "quantile_mlp"
_MIN_STD = 1e-12
_MIN_GAP = 1e-3  # standard units: two levels' starting quantiles never coincide
_SOFTPLUS_LINEAR = 20.0


@dataclass(frozen=True)
class TargetScaler:
    """Per-horizon mean and std of the training targets (float64)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, y: np.ndarray) -> TargetScaler:
        mean = y.mean(axis=0, dtype=np.float64)
        std = y.std(axis=0, dtype=np.float64)
        # A flat series has no scale; 1 keeps the targets (all equal) where they are.
        return cls(mean=mean, std=np.where(std > _MIN_STD, std, 1.0))

    def transform(self, y: np.ndarray) -> np.ndarray:
        scaled: np.ndarray = (y - self.mean) / self.std
        return scaled.astype(np.float32)

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
        generator = dropout_generator if dropout_generator is not None else torch.Generator()
        layers: list[nn.Module] = []
        width = n_features
        for size in hidden_sizes:
            layers += [nn.Linear(width, size), nn.ReLU(), SeededDropout(dropout, generator)]
            width = size
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


@dataclass(frozen=True)
class QuantileFit:
    model: QuantileMLP
    epochs: list[EpochLoss]
    best_epoch: int
    best_val_loss: float  # validation pinball in standard units (see the module's doc)
    stopped_early: bool

    def log_dict(self) -> dict[str, Any]:
        return {
            "epochs": [e.to_dict() for e in self.epochs],
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "stopped_early": self.stopped_early,
        }


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
        train = (_tensor(train_x, dev), _tensor(train_y, dev))
        val = (_tensor(val_x, dev), _tensor(val_y, dev))
        optimiser = Adam(
            model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
        )
        history: list[EpochLoss] = []
        best_loss, best_epoch, best_state = float("inf"), 0, _state_copy(model)
        stale_epochs = 0
        for epoch in range(1, params.max_epochs + 1):
            train_loss = _one_epoch(
                model, optimiser, train, levels, params.batch_size, batch_generator
            )
            val_loss = _loss(model, val, levels)
            history.append(EpochLoss(epoch, train_loss, val_loss))
            if val_loss < best_loss - params.min_delta:
                best_loss, best_epoch, best_state = val_loss, epoch, _state_copy(model)
                stale_epochs = 0
            else:
                stale_epochs += 1
                if stale_epochs >= params.patience_epochs:
                    break
        model.load_state_dict(best_state)
        model.eval()
        return QuantileFit(model, history, best_epoch, best_loss, len(history) < params.max_epochs)


def _one_epoch(
    model: QuantileMLP,
    optimiser: Adam,
    train: tuple[torch.Tensor, torch.Tensor],
    levels: torch.Tensor,
    batch_size: int,
    batch_generator: torch.Generator,
) -> float:
    """One pass in a seeded random order; returns the row-weighted mean loss."""
    x, y = train
    model.train()
    order = torch.randperm(len(x), generator=batch_generator).to(x.device)
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    for batch in torch.split(order, batch_size):
        optimiser.zero_grad()
        loss = pinball_loss(model(x[batch]), y[batch], levels)
        torch.autograd.backward(loss)
        optimiser.step()
        total += loss.detach().double() * len(batch)
    return float(total.item()) / len(x)


def _loss(
    model: QuantileMLP, data: tuple[torch.Tensor, torch.Tensor], levels: torch.Tensor
) -> float:
    x, y = data
    model.eval()
    with torch.no_grad():
        return float(pinball_loss(model(x), y, levels).item())


def _tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def predict_scaled(
    model: QuantileMLP, x: np.ndarray, device: str, threads: int | None = 1
) -> np.ndarray:
    """Quantiles in standard units, (rows, horizons, quantiles) float64."""
    dev = torch.device(device)
    model.to(dev).eval()
    with torch.no_grad(), torch_threads(threads):
        out = model(_tensor(x, dev))
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
