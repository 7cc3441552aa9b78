"""The MLP: deterministic training, early stopping, a checkpoint that predicts again."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from retrainer.training.model import (
    MLP,
    Adam,
    Standardiser,
    checkpoint_bytes,
    fit,
    load_checkpoint,
    predict_proba,
    torch_threads,
)
from retrainer.training.params import TrainerParams

PARAMS = TrainerParams(hidden_sizes=(16, 8), max_epochs=6, patience_epochs=3, batch_size=64)


@pytest.fixture(autouse=True)
def _restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


Arrays = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def make_data(rows: int = 600, features: int = 5) -> Arrays:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    y = (x[:, 0] + 0.5 * rng.normal(size=rows) > 0).astype(np.float32)
    return x[:450], y[:450], x[450:], y[450:]


def weights(model: torch.nn.Module) -> list[bytes]:
    return [t.numpy().tobytes() for t in model.state_dict().values()]


def test_same_seed_gives_bit_identical_weights_and_losses() -> None:
    first = fit(*make_data(), PARAMS, seed=3, device="cpu")
    second = fit(*make_data(), PARAMS, seed=3, device="cpu")
    assert weights(first.model) == weights(second.model)
    assert first.epochs == second.epochs
    other = fit(*make_data(), PARAMS, seed=4, device="cpu")
    assert weights(other.model) != weights(first.model)


def test_thread_count_does_not_change_the_weights() -> None:
    params = PARAMS.model_copy(update={"hidden_sizes": (64, 32), "batch_size": 256})
    torch.set_num_threads(1)
    one = fit(*make_data(), params, seed=3, device="cpu")
    torch.set_num_threads(2)
    two = fit(*make_data(), params, seed=3, device="cpu")
    assert weights(one.model) == weights(two.model)
    assert one.epochs == two.epochs


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_our_adam_matches_torch_optim_adam_bit_for_bit(weight_decay: float) -> None:
    x, y, _, _ = make_data()
    models = []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(MLP(5, (8, 4), dropout=0.0))
    ours = Adam(models[0].parameters(), lr=0.01, weight_decay=weight_decay)
    theirs = torch.optim.Adam(
        models[1].parameters(), lr=0.01, weight_decay=weight_decay, foreach=False
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    for step in range(20):
        batch = slice(step * 20, step * 20 + 20)
        for model, optimiser in ((models[0], ours), (models[1], theirs)):
            optimiser.zero_grad()
            loss_fn(model(torch.from_numpy(x[batch])), torch.from_numpy(y[batch])).backward()
            optimiser.step()
    assert weights(models[0]) == weights(models[1])


def test_compute_threads_apply_inside_the_block_and_the_budget_comes_back() -> None:
    torch.set_num_threads(2)
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with torch_threads(None):
        assert torch.get_num_threads() == 2
    fit(*make_data(), PARAMS, seed=3, device="cpu")
    assert torch.get_num_threads() == 2


def test_fit_leaves_the_global_rng_and_determinism_flag_as_it_found_them() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(*make_data(), PARAMS, seed=3, device="cpu")
    assert torch.equal(torch.rand(3), expected)
    assert not torch.are_deterministic_algorithms_enabled()


def test_early_stopping_restores_the_best_epoch_weights() -> None:
    params = PARAMS.model_copy(
        update={"max_epochs": 40, "patience_epochs": 2, "learning_rate": 0.05}
    )
    result = fit(*make_data(), params, seed=1, device="cpu")
    losses = [e.val_loss for e in result.epochs]
    assert result.best_val_loss == min(losses)
    assert result.epochs[result.best_epoch - 1].val_loss == result.best_val_loss
    if result.stopped_early:
        assert len(result.epochs) == result.best_epoch + params.patience_epochs
    _, _, val_x, val_y = make_data()
    loss = torch.nn.functional.binary_cross_entropy(
        torch.from_numpy(predict_proba(result.model, val_x, "cpu")).float(), torch.from_numpy(val_y)
    )
    assert float(loss) == pytest.approx(result.best_val_loss, rel=1e-5)


def test_model_learns_an_easy_signal() -> None:
    params = PARAMS.model_copy(update={"max_epochs": 30, "learning_rate": 0.01})
    result = fit(*make_data(), params, seed=0, device="cpu")
    _, _, val_x, val_y = make_data()
    accuracy = np.mean((predict_proba(result.model, val_x, "cpu") > 0.5) == val_y)
    assert accuracy > 0.75


def test_standardiser_uses_train_stats_and_survives_constant_features() -> None:
    x = np.array([[1.0, 5.0], [3.0, 5.0]])
    stats = Standardiser.fit(x)
    assert stats.transform(x).tolist() == [[-1.0, 0.0], [1.0, 0.0]]
    assert stats.transform(np.array([[5.0, 6.0]])).dtype == np.float32


def test_checkpoint_reloads_and_predicts_the_same() -> None:
    train_x, train_y, val_x, val_y = make_data()
    result = fit(train_x, train_y, val_x, val_y, PARAMS, seed=3, device="cpu")
    stats = Standardiser.fit(train_x.astype(np.float64))
    data = checkpoint_bytes(result.model, stats, [f"f{i}" for i in range(5)], PARAMS)
    assert checkpoint_bytes(result.model, stats, [f"f{i}" for i in range(5)], PARAMS) == data
    loaded = load_checkpoint(data)
    assert loaded.feature_names == ["f0", "f1", "f2", "f3", "f4"]
    np.testing.assert_array_equal(loaded.standardiser.mean, stats.mean)
    np.testing.assert_array_equal(
        predict_proba(loaded.model, val_x, "cpu"), predict_proba(result.model, val_x, "cpu")
    )
