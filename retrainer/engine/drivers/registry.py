"""Build a driver by name ([run] driver)."""

from __future__ import annotations

from collections.abc import Sequence

from retrainer.base.config import Settings
from retrainer.engine.drivers.protocol import Driver


def make_driver(
    settings: Settings,
    preload: Sequence[str],
    threads: int = 1,
    bars: Sequence[tuple[str, int, dict[str, object]]] = (),
) -> Driver:
    """preload: what the trainer needs imported in the zygote; threads: the items' likely
    thread budget (the local driver sizes the zygote's libraries to it); bars: data files
    the local zygote reads once for all its attempts (remote nodes read their own)."""
    name = settings.run.driver
    if name == "local":
        from retrainer.engine.drivers.local import LocalDriver

        return LocalDriver(preload, threads, bars)
    if name == "ray":
        from retrainer.engine.drivers.ray_driver import RayDriver

        return RayDriver(settings.ray, settings.storage, preload, threads)
    if name == "dask":
        from retrainer.engine.drivers.dask_driver import DaskDriver

        return DaskDriver(settings.dask, settings.storage, preload, threads)
    raise ValueError(f"unknown driver {name!r}")
