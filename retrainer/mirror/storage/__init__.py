"""Where finished artifacts are mirrored: a Protocol, one module per backend, a registry."""

from retrainer.mirror.storage.base import (
    STORAGE_BACKENDS,
    MissingExtraError,
    StorageClient,
    StorageFactory,
    UploadError,
    UploadResult,
    import_optional,
    make_storage,
    validate_key,
)

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
