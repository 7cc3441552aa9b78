"""The registry of notifier backends: kind → factory.

Backends live one per module and are imported only when configured, so that their SDK is
needed only by those who use them (retrainer.base.optional names the pip extra).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

from retrainer.base.config import (
    HealthchecksSettings,
    NotifySettings,
    PrometheusSettings,
    Settings,
)
from retrainer.base.errors import BadInputError
from retrainer.notify.fanout import FanOut
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


def _webhook(options: Mapping[str, Any]) -> Notifier:
    from retrainer.notify.webhook import WebhookNotifier

    return WebhookNotifier(options)


# kind → factory. Each factory imports its backend module only when called.
NOTIFIER_BACKENDS: dict[str, NotifierFactory] = {
    "null": _null,
    "telegram": _telegram,
    "webhook": _webhook,
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


def healthchecks_for_run(settings: HealthchecksSettings) -> Notifier | None:
    """The dead man's switch pinger, when a ping URL is configured; else None."""
    from retrainer.notify.healthchecks import HealthchecksPinger, ping_url

    url = ping_url(settings)
    return None if url is None else HealthchecksPinger(settings, url)


def prometheus_for_run(settings: PrometheusSettings, root: Path) -> Notifier | None:
    """The Prometheus exporter, when a textfile or a Pushgateway is configured; else None."""
    if settings.textfile is None and settings.pushgateway_url is None:
        return None
    from retrainer.notify.prometheus import PrometheusExporter

    return PrometheusExporter(settings, root)


def observers_for_run(settings: Settings, monitors: bool = True) -> Notifier:
    """Everything that hears about a run's start and end, as one notifier: the chat
    notifier of [notify], the healthchecks pinger and the Prometheus exporter, as
    configured. Each never fails or delays the run, nor another: one that cannot be built
    (a missing extra, an unreadable secrets file) is logged and left out. monitors=False
    (a backtest): the chat only; the pinger and the exporter watch the nights, and a
    backtest's success must not pass for a night's."""
    observers: list[tuple[str, Notifier]] = [("notify", notifier_for_run(settings.notify))]
    closes = [settings.notify.close_timeout_s]
    watching: list[tuple[str, Callable[[], Notifier | None], float]] = [
        (
            "healthchecks",
            lambda: healthchecks_for_run(settings.healthchecks),
            settings.healthchecks.close_timeout_s,
        ),
        (
            "prometheus",
            lambda: prometheus_for_run(settings.prometheus, settings.run.root.resolve()),
            settings.prometheus.close_timeout_s,
        ),
    ]
    for name, build, close_timeout_s in watching if monitors else []:
        try:
            observer = build()
        except BadInputError as exc:
            structlog.get_logger().error("notify_failed", what="setup", kind=name, reason=str(exc))
            continue
        if observer is not None:
            observers.append((name, observer))
            closes.append(close_timeout_s)
    return FanOut(observers, close_bound_s=max(closes))
