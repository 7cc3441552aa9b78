"""A small MLP for the binary target, trained deterministically on CPU or CUDA.

Same data, seed and params give bit-identical weights: the seed is applied inside a
forked RNG, mini-batches come from a seeded generator, dropout draws its masks from a
seeded generator of its own, and deterministic algorithms are enforced. Every op used
here is elementwise or serial except the matrix products, and those run on one thread
by default (`compute_threads`): MKL's float32 GEMM on Intel CPUs splits and rounds its
work differently with the thread count (seen at 2 and 16 threads on a 16-core Xeon), so
only a fixed thread count gives the scheduler's modes, which give an item different
thread budgets, the same model. CUDA runs use cuBLAS's deterministic workspace.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Protocol, Self, TypeVar

import numpy as np
import torch
from torch import nn

from retrainer.training.params import TrainerParams

CHECKPOINT_FORMAT = "retrainer.mlp/1"
# cuBLAS is deterministic only with a fixed workspace; it reads this when its handle is made.
CUBLAS_DETERMINISTIC_WORKSPACE = ":4096:8"
_MIN_STD = 1e-12


@dataclass(frozen=True)
class Standardiser:
    """Per-feature mean and std, fitted on the training span only (float64)."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray) -> Self:
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
        # A constant feature carries no information; dividing by 1 keeps it at 0.
        return cls(mean=mean, std=np.where(std > _MIN_STD, std, 1.0))

    def transform(self, x: np.ndarray) -> np.ndarray:
        scaled: np.ndarray = (x - self.mean) / self.std
        return scaled.astype(np.float32)


class SeededDropout(nn.Module):
    """Dropout whose masks come from an explicit generator, not the global RNG.

    The masks are drawn with `torch.rand(..., generator=...)`, which fills serially: the
    same generator state gives the same mask whatever the thread count or device.
    """

    def __init__(self, p: float, generator: torch.Generator) -> None:
        super().__init__()
        self.p = p
        self.generator = generator

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, device=self.generator.device)
        mask = (keep >= self.p).to(device=x.device, dtype=x.dtype)
        return x * mask / (1.0 - self.p)


def hidden_layers(
    n_features: int,
    hidden_sizes: Sequence[int],
    dropout: float,
    dropout_generator: torch.Generator | None = None,
) -> tuple[list[nn.Module], int]:
    """Linear, ReLU and seeded dropout per hidden size; and the last width."""
    generator = dropout_generator if dropout_generator is not None else torch.Generator()
    layers: list[nn.Module] = []
    width = n_features
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), nn.ReLU(), SeededDropout(dropout, generator)]
        width = size
    return layers, width


class MLP(nn.Module):
    def __init__(
        self,
        n_features: int,
        hidden_sizes: Sequence[int],
        dropout: float,
        dropout_generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        layers, width = hidden_layers(n_features, hidden_sizes, dropout, dropout_generator)
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, shape (rows,)."""
        out: torch.Tensor = self.net(x)
        return out.squeeze(-1)


class Adam:
    """torch.optim.Adam's update (L2 weight decay, no amsgrad), op for op.

    torch.optim imports TorchDynamo on an optimiser's first use, which costs several times
    the training itself, paid again in every item's process (docs/benchmarks.md). The same ops in
    the same order give the same bits (a test compares the two).
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        lr: float,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.steps = 0
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        beta1, beta2 = self.betas
        self.steps += 1
        step_size = self.lr / (1 - beta1**self.steps)
        bias_correction2_sqrt = math.sqrt(1 - beta2**self.steps)
        with torch.no_grad():
            for param, exp_avg, exp_avg_sq in zip(
                self.params, self.exp_avg, self.exp_avg_sq, strict=True
            ):
                if param.grad is None:
                    continue
                grad = param.grad
                if self.weight_decay != 0:
                    grad = grad.add(param, alpha=self.weight_decay)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(self.eps)
                param.addcdiv_(exp_avg, denom, value=-step_size)


@dataclass(frozen=True)
class EpochLoss:
    epoch: int
    train_loss: float
    val_loss: float

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "train_loss": self.train_loss, "val_loss": self.val_loss}


ModelT = TypeVar("ModelT", bound=nn.Module)
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class FitSchedule(Protocol):
    """The params an early-stopped fit reads (the default and the quantile trainer's)."""

    @property
    def max_epochs(self) -> int: ...
    @property
    def patience_epochs(self) -> int: ...
    @property
    def min_delta(self) -> float: ...
    @property
    def batch_size(self) -> int: ...


@dataclass(frozen=True)
class FitResult(Generic[ModelT]):
    model: ModelT
    epochs: list[EpochLoss]
    best_epoch: int
    best_val_loss: float
    stopped_early: bool

    def log_dict(self) -> dict[str, Any]:
        return {
            "epochs": [e.to_dict() for e in self.epochs],
            "best_epoch": self.best_epoch,
            "best_val_loss": self.best_val_loss,
            "stopped_early": self.stopped_early,
        }


@contextmanager
def deterministic_torch(seed: int, device: torch.device) -> Iterator[None]:
    """Seed every RNG and enforce deterministic algorithms; restore the global state after."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC_WORKSPACE)
    devices = [_cuda_index(device)] if device.type == "cuda" else []
    previous_mode = torch.get_deterministic_debug_mode()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        # "error" sets the flag that use_deterministic_algorithms(True) sets, without
        # importing Inductor for its config (seconds per process; we never compile).
        torch.set_deterministic_debug_mode("error")
        try:
            yield
        finally:
            torch.set_deterministic_debug_mode(previous_mode)


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """Run the block with `threads` intra-op threads (None: as they are); restore after."""
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _cuda_index(device: torch.device) -> int:
    return device.index if device.index is not None else torch.cuda.current_device()


def fit(
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    params: TrainerParams,
    seed: int,
    device: str,
) -> FitResult[MLP]:
    """Adam on BCEWithLogits with early stopping on validation loss; best weights kept.

    `train_x`/`val_x` are already standardised float32; `*_y` are 0/1.
    """
    dev = torch.device(device)
    with deterministic_torch(seed, dev), torch_threads(params.compute_threads):
        # The two generators are seeded apart from the init RNG so the init and the
        # batch order / dropout masks do not share a stream.
        batch_generator = torch.Generator().manual_seed(seed + 1)
        dropout_generator = _generator_on(dev, seed + 2)
        model = MLP(train_x.shape[1], params.hidden_sizes, params.dropout, dropout_generator)
        model.to(dev)
        tx, ty = tensor_on(train_x, dev), tensor_on(train_y, dev)
        vx, vy = tensor_on(val_x, dev), tensor_on(val_y, dev)
        optimiser = Adam(
            model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
        )
        return train_with_early_stopping(
            model, optimiser, nn.BCEWithLogitsLoss(), (tx, ty), (vx, vy), params, batch_generator
        )


def _generator_on(device: torch.device, seed: int) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def tensor_on(array: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)).to(device)


def train_with_early_stopping(
    model: ModelT,
    optimiser: Adam,
    loss_fn: LossFn,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    schedule: FitSchedule,
    batch_generator: torch.Generator,
) -> FitResult[ModelT]:
    """Epochs in a seeded order until the validation loss stops improving by min_delta
    for patience_epochs; the best epoch's weights kept (in eval mode)."""
    history: list[EpochLoss] = []
    best_loss, best_epoch, best_state = float("inf"), 0, _state_copy(model)
    stale_epochs = 0
    for epoch in range(1, schedule.max_epochs + 1):
        train_loss = _train_one_epoch(
            model, optimiser, loss_fn, train, schedule.batch_size, batch_generator
        )
        val_loss = evaluate_loss(model, loss_fn, val)
        history.append(EpochLoss(epoch, train_loss, val_loss))
        if val_loss < best_loss - schedule.min_delta:
            best_loss, best_epoch, best_state = val_loss, epoch, _state_copy(model)
            stale_epochs = 0
        else:
            stale_epochs += 1
            if stale_epochs >= schedule.patience_epochs:
                break
    model.load_state_dict(best_state)
    model.eval()
    stopped_early = len(history) < schedule.max_epochs
    return FitResult(model, history, best_epoch, best_loss, stopped_early)


def _train_one_epoch(
    model: nn.Module,
    optimiser: Adam,
    loss_fn: LossFn,
    train: tuple[torch.Tensor, torch.Tensor],
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
        loss = loss_fn(model(x[batch]), y[batch])
        torch.autograd.backward(loss)
        optimiser.step()
        total += loss.detach().double() * len(batch)
    return float(total.item()) / len(x)


def evaluate_loss(
    model: nn.Module, loss_fn: LossFn, data: tuple[torch.Tensor, torch.Tensor]
) -> float:
    x, y = data
    model.eval()
    with torch.no_grad():
        return float(loss_fn(model(x), y).item())


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def predict_proba(model: MLP, x: np.ndarray, device: str, threads: int | None = 1) -> np.ndarray:
    """P(target = 1) per row, as float64 for the metrics (`threads`: see `torch_threads`)."""
    dev = torch.device(device)
    model.to(dev).eval()
    with torch.no_grad(), torch_threads(threads):
        logits = model(tensor_on(x, dev))
    return torch.sigmoid(logits).double().cpu().numpy()


def checkpoint_bytes(
    model: MLP, standardiser: Standardiser, features: Sequence[str], params: TrainerParams
) -> bytes:
    """torch.save of the weights (on CPU) with everything needed to predict again."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "feature_names": list(features),
        "mean": torch.from_numpy(standardiser.mean.copy()),
        "std": torch.from_numpy(standardiser.std.copy()),
        "hidden_sizes": list(params.hidden_sizes),
        "dropout": params.dropout,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


@dataclass(frozen=True)
class Checkpoint:
    model: MLP
    standardiser: Standardiser
    feature_names: list[str]


def load_checkpoint(data: bytes) -> Checkpoint:
    """Rebuild the model from `model.bin`'s bytes (weights-only unpickling)."""
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"not a {CHECKPOINT_FORMAT} checkpoint")
    names = [str(n) for n in payload["feature_names"]]
    model = MLP(len(names), [int(s) for s in payload["hidden_sizes"]], float(payload["dropout"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    stats = Standardiser(mean=payload["mean"].numpy(), std=payload["std"].numpy())
    return Checkpoint(model=model, standardiser=stats, feature_names=names)
