"""The worker plugin of the Dask driver (imported only where distributed is installed)."""

from __future__ import annotations

from typing import Any

from distributed import WorkerPlugin

from retrainer.engine.drivers.node import NODE_DRIVERS

PLUGIN_NAME = "retrainer-node"


class RetrainerNodePlugin(WorkerPlugin):
    """Owns what an attempt needs on a worker for the whole night: the zygote that forks
    the attempts (made on the first attempt), closed with its warm processes when the
    worker or the plugin goes."""

    name = PLUGIN_NAME

    def teardown(self, worker: Any) -> None:
        NODE_DRIVERS.close()
