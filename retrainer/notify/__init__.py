"""Who hears about a run: a Protocol, one module per backend, a registry."""

from retrainer.notify.null import NullNotifier
from retrainer.notify.protocol import Notifier
from retrainer.notify.registry import (
    NOTIFIER_BACKENDS,
    NotifierFactory,
    make_notifier,
    notifier_for_run,
)

__all__ = [
    "NOTIFIER_BACKENDS",
    "Notifier",
    "NotifierFactory",
    "NullNotifier",
    "make_notifier",
    "notifier_for_run",
]
