"""Imported by the forkserver: the heavy modules every attempt needs, imported once.

multiprocessing's own preload stops the forkserver dead on any error but ImportError, so a
plug-in module that fails to import would fail every attempt with an opaque EOFError. Here
each module is imported on its own and a failure only leaves it to the attempt itself,
which then reports the real error. Then the worker's hot path is run once (warmup), so
that each fork starts warm rather than merely imported.
"""

from __future__ import annotations

import contextlib
import importlib
import os

PRELOAD_ENV = "RETRAINER_PRELOAD"


def preload(modules: list[str]) -> None:
    for name in modules:
        with contextlib.suppress(Exception):
            importlib.import_module(name)
    with contextlib.suppress(Exception):  # a speed-up only: never the forkserver's end
        from retrainer.scheduler.warmup import warm_up

        warm_up()


preload([m for m in os.environ.get(PRELOAD_ENV, "").split(",") if m])
