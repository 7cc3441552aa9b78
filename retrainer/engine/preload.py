"""Run by the zygote at its start: the heavy modules every attempt needs, imported once.

Each module is imported on its own, and a failure only leaves it to the attempt itself,
which then reports the real error (a zygote that died of it would fail every attempt
with an opaque message). Then the worker's hot path is run once (warmup), so that each
fork starts warm rather than merely imported.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Iterator

# structlog imports these, when installed, only for its console renderer; an attempt
# writes JSON lines and never draws one. Without them the zygote holds ~90 fewer
# modules (~5 MB), which every fork copies and every exit tears down.
CONSOLE_ONLY = ("rich",)


def preload(modules: list[str]) -> None:
    """modules: names to import; "package.module:function" entries are called once the
    imports are done (a trainer's `warm_up` hook: a tiny fit, so that every attempt starts
    with its libraries' first-call work done)."""
    with _hidden(CONSOLE_ONLY):
        import structlog  # noqa: F401
    hooks = [name for name in modules if ":" in name]
    for name in modules:
        with contextlib.suppress(Exception):
            importlib.import_module(name.partition(":")[0])
    for hook in hooks:
        with contextlib.suppress(Exception):  # a speed-up only: never the zygote's end
            module, _, function = hook.partition(":")
            getattr(importlib.import_module(module), function)()
    with contextlib.suppress(Exception):
        from retrainer.engine.warmup import warm_up

        warm_up()


@contextlib.contextmanager
def _hidden(names: tuple[str, ...]) -> Iterator[None]:
    """Inside the block, importing these raises ImportError (so optional users skip them);
    after it, a trainer that wants them imports them as usual."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]
