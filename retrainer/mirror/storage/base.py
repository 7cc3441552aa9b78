"""What every storage backend offers, how keys look, and the registry of backends.

A storage client mirrors finished artifacts somewhere else (a folder, a bucket). Keys are
POSIX relative paths such as ``models/BTCUSDT/20261123_020000Z/model.bin``; each backend
maps them onto its own namespace. Backends live one per module and are imported only when
the configuration asks for them, so that an SDK (boto3, dropbox) is needed only by those
who use it; a missing one is reported with the pip extra that installs it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from retrainer.base.artifacts import to_json
from retrainer.base.config import StorageSettings
from retrainer.base.errors import BadInputError


@dataclass(frozen=True)
class UploadResult:
    """One object stored (or found already stored) under a key."""

    key: str
    uri: str
    bytes: int
    sha256: str
    seconds: float
    skipped: bool  # already present with the same sha256: nothing was sent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UploadResult:
        return cls(**data)


class UploadError(Exception):
    """A storage operation on one key failed. The reason never carries a secret."""

    def __init__(self, key: str, reason: str) -> None:
        # Both as args, so that the error survives pickling across processes.
        super().__init__(key, reason)
        self.key = key
        self.reason = reason

    def __str__(self) -> str:
        return f"storage of {self.key!r} failed: {self.reason}"


class MissingExtraError(BadInputError):
    """The configuration asks for a backend whose optional package is not installed."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"{module} is not installed; it comes with: pip install 'retrainer[{extra}]'"
        )
        self.module = module
        self.extra = extra


def import_optional(module: str, extra: str) -> ModuleType:
    """Import an optional SDK inside the backend that needs it, naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(module, extra) from None


@runtime_checkable
class StorageClient(Protocol):
    def put_file(self, local_path: Path, key: str) -> UploadResult: ...

    def put_json(self, obj: Any, key: str) -> UploadResult: ...

    def exists(self, key: str) -> bool: ...

    def checksum(self, key: str) -> str | None:
        """The sha256 (hex) of the object stored at key; None when there is none."""
        ...

    def uri(self, key: str) -> str: ...

    def describe(self) -> str:
        """Where objects go, for logs and the summary, e.g. "local:/srv/mirror"."""
        ...


def json_bytes(obj: Any, key: str) -> bytes:
    """The bytes every backend's put_json stores: the artifacts' JSON format, UTF-8."""
    try:
        return to_json(obj).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise UploadError(key, f"not JSON-serialisable: {exc}") from exc


def validate_key(key: str) -> str:
    """Return key unchanged if it is a POSIX relative path that stays inside the store."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"storage key must be a non-empty string, got {key!r}")
    if key.startswith("/"):
        raise ValueError(f"storage key must be relative, got {key!r}")
    if "\\" in key or "\0" in key:
        raise ValueError(f"storage key must use '/' and no NUL, got {key!r}")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise ValueError(f"storage key has an empty, '.' or '..' part: {key!r}")
    return key


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
