"""A storage backend that mirrors objects into a folder (a NAS mount, a second disk).

Each object is written to a temp file in its target folder, fsynced, checked against the
source's sha256 and only then renamed onto its key: a crash or a kill -9 at any instant
leaves the key either absent, old or complete, never torn.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from retrainer.base.artifacts import file_mode, fsync_dir, sha256_bytes, sha256_file
from retrainer.base.config import StorageSettings
from retrainer.base.errors import BadInputError
from retrainer.mirror.storage.protocol import UploadError, UploadResult, json_bytes, validate_key

Writer = Callable[[IO[bytes]], None]


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root.expanduser().absolute()
        # path → ((size, mtime_ns, inode), sha256): re-hash only a file that changed.
        self._digests: dict[Path, tuple[tuple[int, int, int], str]] = {}

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> LocalStorage:
        if settings.path is None:
            raise BadInputError('storage.path is required when storage.kind = "local"')
        return cls(settings.path)

    def describe(self) -> str:
        return f"local:{self.root}"

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def checksum(self, key: str) -> str | None:
        path = self._path(key)
        try:
            return self._cached_sha256(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except OSError as exc:
            raise UploadError(key, _reason("cannot read the stored object", exc)) from exc

    def put_file(self, local_path: Path, key: str) -> UploadResult:
        started = time.monotonic()
        target = self._path(key)
        try:
            size = local_path.stat().st_size
            digest = sha256_file(local_path)
        except OSError as exc:
            raise UploadError(key, _reason(f"cannot read {local_path.name}", exc)) from exc
        return self._store(key, target, digest, size, started, _copy_from(local_path))

    def get_file(self, key: str, local_path: Path) -> None:
        source = self._path(key)
        try:
            _write_verified(local_path, self._cached_sha256(source), _copy_from(source))
        except _CopyDiffers:
            raise UploadError(key, "the copy differs from the stored object") from None
        except OSError as exc:
            raise UploadError(key, _reason("cannot read the stored object", exc)) from exc

    def put_json(self, obj: Any, key: str) -> UploadResult:
        started = time.monotonic()
        target = self._path(key)
        data = json_bytes(obj, key)
        return self._store(key, target, sha256_bytes(data), len(data), started, _bytes(data))

    def delete(self, key: str) -> None:
        target = self._path(key)
        try:
            target.unlink(missing_ok=True)
        except OSError as exc:
            raise UploadError(key, _reason("cannot remove the object", exc)) from exc
        self._digests.pop(target, None)
        # Folders it leaves empty go too, as a bucket has no empty folders to leave.
        for parent in target.parents:
            if parent == self.root or self.root not in parent.parents:
                break
            try:
                parent.rmdir()
            except OSError:
                break  # not empty (or gone): the folders above it stay

    def list_keys(self, folder: str) -> list[str]:
        base = self._path(folder)
        try:
            found = [p for p in base.rglob("*") if p.is_file() and not p.name.startswith(".")]
        except OSError as exc:
            raise UploadError(folder, _reason("cannot list the folder", exc)) from exc
        return sorted(p.relative_to(self.root).as_posix() for p in found)

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _store(
        self, key: str, target: Path, digest: str, size: int, started: float, write: Writer
    ) -> UploadResult:
        skipped = self.checksum(key) == digest
        if not skipped:
            try:
                _write_verified(target, digest, write)
                self._remember(target, digest)
            except OSError as exc:
                raise UploadError(key, _reason("cannot write the object", exc)) from exc
            except _CopyDiffers:
                raise UploadError(key, "the copy's sha256 differs from the source's") from None
        return UploadResult(
            key=key,
            uri=target.as_uri(),
            bytes=size,
            sha256=digest,
            seconds=time.monotonic() - started,
            skipped=skipped,
        )

    def _cached_sha256(self, path: Path) -> str:
        # Stamp before hashing: a file that changes meanwhile is re-hashed next time.
        stamp = _stamp(path)
        cached = self._digests.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        digest = sha256_file(path)
        self._digests[path] = (stamp, digest)
        return digest

    def _remember(self, path: Path, digest: str) -> None:
        self._digests[path] = (_stamp(path), digest)


def _stamp(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_size, st.st_mtime_ns, st.st_ino)


class _CopyDiffers(Exception):
    """The temp copy does not hash to the source's sha256 (the source changed, or I/O)."""


def _write_verified(target: Path, digest: str, write: Writer) -> None:
    """Temp file in the target's folder, fsync, verify its sha256, then rename onto target."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            write(out)
            out.flush()
            # Read by other tools and users too: the mode the umask gives, as every file
            # retrainer writes (mkstemp alone would make it 0600).
            os.fchmod(out.fileno(), file_mode())
            os.fsync(out.fileno())
        if sha256_file(tmp) != digest:
            raise _CopyDiffers()
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(target.parent)


def _copy_from(source: Path) -> Writer:
    def write(out: IO[bytes]) -> None:
        with source.open("rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)

    return write


def _bytes(data: bytes) -> Writer:
    def write(out: IO[bytes]) -> None:
        out.write(data)

    return write


def _reason(step: str, exc: OSError) -> str:
    return f"{step}: {exc.strerror or type(exc).__name__}"
