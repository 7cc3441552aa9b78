"""retrainer: nightly per-symbol model retraining."""

__version__ = "0.1.0"
