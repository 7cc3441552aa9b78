"""The registry of storage backends: kind → factory.

Backends live one per module and are imported only when the configuration asks for them,
so that an SDK (boto3, dropbox) is needed only by those who use it; a missing one is
reported with the pip extra that installs it (retrainer.base.optional).
"""

from __future__ import annotations

from collections.abc import Callable

from retrainer.base.config import StorageSettings
from retrainer.base.errors import BadInputError
from retrainer.mirror.storage.protocol import StorageClient

StorageFactory = Callable[[StorageSettings], StorageClient]


def _local(settings: StorageSettings) -> StorageClient:
    from retrainer.mirror.storage.local import LocalStorage

    return LocalStorage.from_settings(settings)


def _s3(settings: StorageSettings) -> StorageClient:
    from retrainer.mirror.storage.s3 import S3Storage

    return S3Storage.from_settings(settings)


def _dropbox(settings: StorageSettings) -> StorageClient:
    from retrainer.mirror.storage.dropbox import DropboxStorage

    return DropboxStorage.from_settings(settings)


# kind (as in [storage] kind = "...") → factory. Each factory imports its backend module
# only when called; a backend with an SDK imports it via `import_optional(sdk, extra)`.
STORAGE_BACKENDS: dict[str, StorageFactory] = {
    "local": _local,
    "s3": _s3,
    "dropbox": _dropbox,
}


def make_storage(settings: StorageSettings) -> StorageClient | None:
    """The configured storage client; None when storage is off (kind = "none")."""
    if settings.kind == "none":
        return None
    factory = STORAGE_BACKENDS.get(settings.kind)
    if factory is None:
        known = ", ".join(sorted(["none", *STORAGE_BACKENDS]))
        raise BadInputError(f"storage.kind {settings.kind!r} is unknown (known: {known})")
    return factory(settings)
