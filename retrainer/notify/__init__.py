"""Who hears about a run: a Protocol, one module per backend, a registry."""

from retrainer.notify.base import (
    NOTIFIER_BACKENDS,
    Notifier,
    NotifierFactory,
    make_notifier,
    notifier_for_run,
)
from retrainer.notify.null import NullNotifier

__all__ = ["NOTIFIER_BACKENDS", "Notifier", "NotifierFactory", "NullNotifier", "make_notifier",
           "notifier_for_run"]
