"""Notifiers: the Protocol, the null notifier and the registry that picks one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from retrainer.base.errors import BadInputError
from retrainer.notify import NOTIFIER_BACKENDS, Notifier, NullNotifier, make_notifier


class RecordingNotifier:
    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)
        self.calls: list[tuple[str, Any]] = []

    def run_started(self, info: Mapping[str, Any]) -> None:
        self.calls.append(("run_started", dict(info)))

    def item_failed(self, symbol: str, reason: str) -> None:
        self.calls.append(("item_failed", (symbol, reason)))

    def run_finished(self, summary: Mapping[str, Any]) -> None:
        self.calls.append(("run_finished", dict(summary)))

    def close(self) -> None:
        self.calls.append(("close", None))


def test_the_null_notifier_is_a_notifier_that_accepts_every_call_and_says_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    notifier = NullNotifier()

    assert isinstance(notifier, Notifier)
    notifier.run_started({"run_id": "r-1", "symbols": ["BTCUSDT"]})
    notifier.item_failed("BTCUSDT", "timed out after 45 min")
    notifier.run_finished({"succeeded": 0, "failed": 1})
    notifier.close()
    assert capfd.readouterr() == ("", "")


def test_without_a_kind_the_notifier_is_the_null_one() -> None:
    assert isinstance(make_notifier(), NullNotifier)
    assert isinstance(make_notifier("null", {"ignored": True}), NullNotifier)


def test_an_unknown_kind_is_bad_input_naming_the_known_kinds() -> None:
    with pytest.raises(BadInputError, match="'pigeon'.*null"):
        make_notifier("pigeon")


def test_a_registered_backend_is_built_with_its_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(NOTIFIER_BACKENDS, "recording", RecordingNotifier)

    notifier = make_notifier("recording", {"chat_id": 42})

    assert isinstance(notifier, RecordingNotifier)
    assert isinstance(notifier, Notifier)
    assert notifier.options == {"chat_id": 42}


def test_an_object_missing_a_method_is_not_a_notifier() -> None:
    class Incomplete:
        def run_started(self, info: Mapping[str, Any]) -> None: ...

    assert not isinstance(Incomplete(), Notifier)
