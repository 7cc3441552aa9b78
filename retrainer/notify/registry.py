"""The registry of notifier backends: kind → factory.

Backends live one per module and are imported only when configured, so that their SDK is
needed only by those who use them (retrainer.base.optional names the pip extra).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from retrainer.base.config import NotifySettings, Settings
from retrainer.base.errors import BadInputError
from retrainer.notify.protocol import Notifier

# A backend's factory takes its options (the [notify] table of the config, secrets aside:
# those it reads from the environment itself).
NotifierFactory = Callable[[Mapping[str, Any]], Notifier]


def _null(options: Mapping[str, Any]) -> Notifier:
    from retrainer.notify.null import NullNotifier

    return NullNotifier()


def _telegram(options: Mapping[str, Any]) -> Notifier:
    from retrainer.notify.telegram import TelegramNotifier

    return TelegramNotifier(options)


# kind → factory. Each factory imports its backend module only when called.
NOTIFIER_BACKENDS: dict[str, NotifierFactory] = {
    "null": _null,
    "telegram": _telegram,
}


def make_notifier(kind: str = "null", options: Mapping[str, Any] | None = None) -> Notifier:
    """The notifier of the given kind, built from its options."""
    factory = NOTIFIER_BACKENDS.get(kind)
    if factory is None:
        known = ", ".join(sorted(NOTIFIER_BACKENDS))
        raise BadInputError(f"notifier kind {kind!r} is unknown (known: {known})")
    return factory(options or {})


def notifier_for_run(settings: NotifySettings) -> Notifier:
    """The run's notifier. One that cannot be built (no token, no SDK) is logged and
    replaced by the null one: a notifier never fails a run."""
    if not settings.enabled:
        return make_notifier("null")
    try:
        return make_notifier(settings.kind, settings.model_dump())
    except BadInputError as exc:
        structlog.get_logger().error(
            "notify_failed", what="setup", kind=settings.kind, reason=str(exc)
        )
        return make_notifier("null")


def observers_for_run(settings: Settings) -> Notifier:
    """Everything that hears about a run's start and end, as one notifier: the chat
    notifier of [notify]. Each never fails or delays the run."""
    return notifier_for_run(settings.notify)
