"""The notifier that tells no one: the default when no notifier is configured."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class NullNotifier:
    def run_started(self, info: Mapping[str, Any]) -> None:
        return None

    def item_failed(self, symbol: str, reason: str) -> None:
        return None

    def run_finished(self, summary: Mapping[str, Any]) -> None:
        return None

    def close(self) -> None:
        return None
