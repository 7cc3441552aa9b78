"""Where finished artifacts are mirrored: a Protocol, one module per backend, a registry."""

from retrainer.base.optional import MissingExtraError, import_optional
from retrainer.mirror.storage.protocol import (
    StorageClient,
    UploadError,
    UploadResult,
    validate_key,
)
from retrainer.mirror.storage.registry import STORAGE_BACKENDS, StorageFactory, make_storage

__all__ = [
    "STORAGE_BACKENDS",
    "MissingExtraError",
    "StorageClient",
    "StorageFactory",
    "UploadError",
    "UploadResult",
    "import_optional",
    "make_storage",
    "validate_key",
]
