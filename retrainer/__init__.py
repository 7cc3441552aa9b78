"""retrainer: nightly per-symbol model retraining.

The package's front door keeps `import retrainer` light: the version only. The public
Python API is imported on first use (PEP 562), so a script that never loads a model
never pays for the registry and its imports:

    import retrainer
    model = retrainer.load_model("/srv/retrainer", "BTCUSDT")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from retrainer.base.version import __version__

if TYPE_CHECKING:
    from retrainer.registry.loader import ModelLoadError, load_attempt, load_model

__all__ = ["ModelLoadError", "__version__", "load_attempt", "load_model"]


def __getattr__(name: str) -> Any:
    if name in ("load_model", "load_attempt", "ModelLoadError"):
        from retrainer.registry import loader

        value = getattr(loader, name)
        globals()[name] = value  # once: later lookups do not come back here
        return value
    raise AttributeError(f"module 'retrainer' has no attribute {name!r}")
