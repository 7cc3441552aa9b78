"""Optional SDKs (boto3, dropbox, telegram…) are imported inside the module that needs
them; a missing one is bad input that names the pip extra installing it."""

from __future__ import annotations

import importlib
from types import ModuleType

from retrainer.base.errors import BadInputError


class MissingExtraError(BadInputError):
    """The configuration asks for a backend whose optional package is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed; it comes with: pip install 'retrainer[{extra}]'"
        )
        self.module = module
        self.extra = extra


def import_optional(module: str, extra: str) -> ModuleType:
    """Import an optional SDK inside the backend that needs it, naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module, extra) from None
