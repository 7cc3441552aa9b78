"""What every storage backend offers, and how keys look.

A storage client mirrors finished artifacts somewhere else (a folder, a bucket). Keys are
POSIX relative paths such as ``models/BTCUSDT/20261123_020000Z/model.bin``; each backend
maps them onto its own namespace.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from retrainer.base.artifacts import to_json


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


@runtime_checkable
class StorageClient(Protocol):
    def put_file(self, local_path: Path, key: str) -> UploadResult: ...

    def put_json(self, obj: Any, key: str) -> UploadResult: ...

    def exists(self, key: str) -> bool: ...

    def get_file(self, key: str, local_path: Path) -> None:
        """Download the object at key to local_path (replaced whole, never torn); an
        UploadError naming the key when it cannot."""
        ...

    def checksum(self, key: str) -> str | None:
        """The sha256 (hex) of the object stored at key; None when there is none."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object at key; a key with no object is already gone (no error). An
        UploadError naming the key when it cannot."""
        ...

    def list_keys(self, folder: str) -> list[str]:
        """Every key under the folder `folder` (itself a key, e.g. "models/BTCUSDT"),
        sorted; empty when there is none."""
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
