"""A searchable trainer for tests: the default trainer, failing for one value of a param.

    [trainer]
    plugin = "tests.support.search_plugins:fails_on_high_dropout"

Its params are the default trainer's (the same params model), so a search over them is
checked as for the real one; a candidate with dropout >= 0.5 raises inside its attempt.
"""

from __future__ import annotations

from typing import Any

from retrainer.training.contract import TrainContext
from retrainer.training.params import TrainerParams
from retrainer.training.trainer import train

FAILING_DROPOUT = 0.5


def fails_on_high_dropout(ctx: TrainContext) -> Any:
    if float(ctx.params.get("dropout", 0.0)) >= FAILING_DROPOUT:
        raise RuntimeError(f"this candidate blew up (dropout {ctx.params['dropout']})")
    return train(ctx)


fails_on_high_dropout.params_model = TrainerParams  # type: ignore[attr-defined]
fails_on_high_dropout.evaluate = train.evaluate  # type: ignore[attr-defined]
