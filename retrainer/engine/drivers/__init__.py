"""Drivers decide WHERE attempts run (protocol.py); one module per driver, built by name."""

from __future__ import annotations

from collections.abc import Sequence

from retrainer.engine.drivers.protocol import Driver


def make_driver(name: str, preload: Sequence[str], threads: int = 1) -> Driver:
    if name == "local":
        from retrainer.engine.drivers.local import LocalDriver

        return LocalDriver(preload, threads)
    raise ValueError(f"unknown driver {name!r}")
