"""Backtest-capable trainers for tests: the default trainer, slowed or failing per window.

    [trainer]
    plugin = "tests.support.backtest_plugins:slow"     # each window sleeps, then trains
    [trainer.params]
    hidden_sizes = [8]                                  # the default trainer's params
    ...

The pause (RETRAINER_TEST_WINDOW_SLEEP_S, seconds) comes from the environment, so the
default trainer's params model checks the params as it does for the real one. Each
attempt writes its pid to RETRAINER_TEST_PID_DIR, if set, for the no-survivor checks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from retrainer.training.contract import TrainContext
from retrainer.training.params import TrainerParams
from retrainer.training.trainer import score_forecasts, train


def slow(ctx: TrainContext) -> Any:
    pid_dir = os.environ.get("RETRAINER_TEST_PID_DIR")
    if pid_dir:
        Path(pid_dir).mkdir(parents=True, exist_ok=True)
        (Path(pid_dir) / f"{os.getpid()}.pid").write_text(str(os.getpid()))
    time.sleep(float(os.environ.get("RETRAINER_TEST_WINDOW_SLEEP_S", "0.5")))
    return train(ctx)


def fails_on_third_window(ctx: TrainContext) -> Any:
    """The default trainer, but the window w0002 of every symbol raises."""
    if ctx.window is not None and ctx.window.index == 2:
        raise RuntimeError("this window's fit blew up")
    return train(ctx)


for _plugin in (slow, fails_on_third_window):
    _plugin.params_model = TrainerParams  # type: ignore[attr-defined]
    _plugin.score_forecasts = score_forecasts  # type: ignore[attr-defined]
