"""What travels between the head and a node when they share no disk: a symbol's data file
(once per symbol, cached on the node by its sha256), the partial outputs a retry may reuse,
the champion's model files an attempt scores for the promotion gate, and a finished
attempt's folder and logs, as one tar in memory.

The node names each file by its place in the attempt (`out/…`, `logs/…`, `engine.log`), the
head unpacks them under the root's own paths, so that nothing depends on where the node's
scratch folder was.
"""

from __future__ import annotations

import contextlib
import io
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from retrainer.base.artifacts import (
    FEATURES_FILE,
    MANIFEST_NAME,
    atomic_write_bytes,
    sha256_bytes,
)
from retrainer.base.artifacts import verify_manifest as _verify_manifest
from retrainer.engine.attempt import AttemptSpec
from retrainer.training.contract import PARTIALS_MANIFEST, read_partials

OUT = "out"  # the attempt's artifact folder
LOGS = "logs"  # the attempt's log folder (its stdout log, worker.log, result file)
ENGINE_LOG = "engine.log"  # the attempt's lines of the run's engine.log


@dataclass(frozen=True)
class AttemptFolders:
    """Where one attempt writes, on the machine it runs on."""

    out_dir: Path
    log_dir: Path
    engine_log: Path


def pack(folders: AttemptFolders, log_names: tuple[str, ...] | None = None) -> bytes:
    """The attempt's folder, its own logs (all, or those named) and its engine.log lines."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        _add_tree(tar, folders.out_dir, OUT)
        for path in sorted(folders.log_dir.glob("*")) if folders.log_dir.is_dir() else []:
            if path.is_file() and (log_names is None or path.name in log_names):
                tar.add(path, arcname=f"{LOGS}/{path.name}", recursive=False)
        if folders.engine_log.is_file():
            tar.add(folders.engine_log, arcname=ENGINE_LOG, recursive=False)
    return buffer.getvalue()


def pack_partials(folder: Path, names: list[str]) -> bytes:
    """The partial outputs (and their manifest) a retry may reuse."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name in names:
            path = folder / name
            if path.is_file():
                tar.add(path, arcname=f"{OUT}/{name}", recursive=False)
    return buffer.getvalue()


def unpack(payload: bytes, folders: AttemptFolders) -> None:
    """Write the packed files under folders: each atomically, the engine.log lines
    appended to the run's engine.log (one write, so its lines stay whole)."""
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r") as tar:
        for member in tar.getmembers():
            if not member.isfile():
                continue
            target = _target(member.name, folders)
            extracted = tar.extractfile(member)
            if target is None or extracted is None:
                continue
            data = extracted.read()
            if member.name == ENGINE_LOG:
                _append(target, data)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(target, data, durable=False)  # the head fsyncs artifacts


def verify_shipped(out_dir: Path) -> list[str]:
    """The node's manifest, if it wrote one, against what arrived."""
    if not (out_dir / MANIFEST_NAME).exists():
        return []
    return _verify_manifest(out_dir)


def _target(name: str, folders: AttemptFolders) -> Path | None:
    """A member's place on the head; None for a name that would leave its folder."""
    if name == ENGINE_LOG:
        return folders.engine_log
    top, _, rest = name.partition("/")
    base = {OUT: folders.out_dir, LOGS: folders.log_dir}.get(top)
    if base is None or not rest or rest.startswith("/") or ".." in Path(rest).parts:
        return None
    return base / rest


def _add_tree(tar: tarfile.TarFile, folder: Path, prefix: str) -> None:
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            tar.add(
                path, arcname=f"{prefix}/{path.relative_to(folder).as_posix()}", recursive=False
            )


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def cached_data_file(scratch: Path, name: str, payload: bytes, sha256: str) -> Path:
    """The data file on this node: written once per content (a retry or a second attempt
    of the symbol finds it), named as on the head so its format is known by its suffix."""
    folder = scratch / "data" / sha256
    path = folder / name
    if path.is_file():
        return path
    if sha256_bytes(payload) != sha256:
        raise OSError(f"data for {name} arrived corrupted (sha256 mismatch)")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, payload, durable=False)
    return path


def remove_tree(folder: Path) -> None:
    """Remove a node-local attempt folder once it has been shipped."""
    if not folder.is_dir():
        return
    for path in sorted(folder.rglob("*"), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir() if path.is_dir() else path.unlink()
    with contextlib.suppress(OSError):
        folder.rmdir()


def champion_payload(spec: AttemptSpec, shared_root: bool) -> bytes | None:
    """The champion's model files travel with the attempt that scores it, when the node
    cannot see them (its features stay: a trainer's evaluate hook rebuilds what it needs)."""
    if shared_root or spec.champion_dir is None or not spec.champion_dir.is_dir():
        return None
    return pack_champion(spec.champion_dir)


def pack_champion(folder: Path) -> bytes:
    """A champion folder's model files, packed (its features stay)."""
    names = [
        p.name
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != FEATURES_FILE and not p.name.startswith(".")
    ]
    return pack_partials(folder, names)


def reuse_payload(spec: AttemptSpec, shared_root: bool) -> bytes | None:
    """A retry's reusable partial outputs travel with it when the node cannot see them."""
    if shared_root or spec.reuse_dir is None:
        return None
    names = list(read_partials(spec.reuse_dir).get("files", {}))
    if not names:
        return None
    return pack_partials(spec.reuse_dir, [PARTIALS_MANIFEST, *names])
