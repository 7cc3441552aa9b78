"""The output layout (a contract), atomic writes and sha256 manifests.

Every file retrainer writes goes through `atomic_write_bytes`: a temp file in the same
folder, fsync, rename. A kill -9 at any instant leaves the old file or the new one. The
file gets the mode the umask gives (0644 under umask 022, 0640 under 027), as open(2)
would: mkstemp alone makes every file 0600, unreadable to an inference service or a web
server running as another user. retrainer writes no file that holds a secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from retrainer.base.clock import attempt_stamp

MANIFEST_NAME = "sha256.txt"
PARTIAL_ARTIFACTS = ("features.parquet", "split_indices.json", "training_log.json")
FINAL_ARTIFACTS = ("model.bin", "config.json", "metrics.json")
FEATURES_FILE = "features.parquet"  # most of a model folder: [run] keep_features
# The champion scored on the attempt's test span, for the promotion gate.
CHAMPION_EVAL_FILE = "champion_eval.json"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class Layout:
    """Where everything lives under one root; see the README's output layout."""

    root: Path

    def run_dir(self, day: str) -> Path:
        return self.root / "runs" / day

    def status_path(self, day: str) -> Path:
        return self.run_dir(day) / "status.json"

    def journal_path(self, day: str) -> Path:
        return self.run_dir(day) / "ledger.jsonl"

    def costs_path(self, day: str) -> Path:
        return self.run_dir(day) / "costs.json"

    def log_dir(self, day: str) -> Path:
        return self.root / "logs" / day

    def engine_log(self, day: str) -> Path:
        return self.log_dir(day) / "engine.log"

    def symbol_log_dir(self, day: str, symbol: str) -> Path:
        return self.log_dir(day) / symbol

    def summary_path(self, day: str) -> Path:
        return self.root / "summary" / day / "engine_summary.json"

    def model_dir(self, symbol: str) -> Path:
        return self.root / "models" / symbol

    def lock_path(self) -> Path:
        return self.root / ".retrainer.lock"

    def quarantine_path(self) -> Path:
        """Releases from quarantine (`retrainer unquarantine`): symbol -> released_at, by."""
        return self.root / "quarantine.json"

    def new_attempt_dir(self, item_id: str, now: datetime) -> Path:
        """Create a fresh, empty attempt folder; never reuse one that exists. An item of
        more than one per symbol ("BTC/c03", "BTC/w0012") gets its own among the symbol's:
        models/BTC/20261123_020000Z_c03."""
        symbol, _, tag = item_id.partition("/")
        base = self.model_dir(symbol)
        base.mkdir(parents=True, exist_ok=True)
        stamp = attempt_stamp(now) + (f"_{tag}" if tag else "")
        candidate, n = base / stamp, 1
        while True:
            try:
                candidate.mkdir()
                return candidate
            except FileExistsError:
                # Two attempts in the same second (a fast retry): suffix, never overwrite.
                candidate, n = base / f"{stamp}-{n}", n + 1

    def relative(self, path: Path) -> str:
        """A path as stored in the ledger and summary: relative to the root."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)


def item_symbol(item_id: str) -> str:
    """The symbol of an item: "BTC" of "BTC", "BTC/c03" (a candidate), "BTC/w0012" (a window)."""
    return item_id.partition("/")[0]


@dataclass(frozen=True)
class BacktestLayout(Layout):
    """A backtest's own tree, beside the nights': <root>/backtests/<name>/. It has one
    ledger for all its windows, whatever the day (a backtest resumes across midnight), and
    its own lock (it may run while a night does). Paths stay relative to the root."""

    name: str = "walkforward"

    @property
    def home(self) -> Path:
        return self.root / "backtests" / self.name

    def run_dir(self, day: str) -> Path:
        return self.home

    def log_dir(self, day: str) -> Path:
        return self.home / "logs"

    def summary_path(self, day: str) -> Path:
        return self.home / "engine_summary.json"

    def model_dir(self, symbol: str) -> Path:
        return self.home / "models" / symbol

    def lock_path(self) -> Path:
        return self.home / ".retrainer.lock"

    def quarantine_path(self) -> Path:
        return self.home / "quarantine.json"

    def forecasts_dir(self) -> Path:
        """The assembled out-of-sample forecasts: one Parquet file per symbol."""
        return self.home / "forecasts"

    def backtest_summary_path(self) -> Path:
        return self.home / "backtest_summary.json"

    def report_path(self) -> Path:
        return self.home / "report.html"


def _umask_from_proc() -> int | None:
    """The process's umask as Linux tells it (/proc/self/status, since 4.7): read without
    changing it, so any thread may ask at any time."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _umask_by_setting() -> int:
    # Elsewhere os.umask can only be read by setting it, which another thread creating a
    # file at that moment would see: done once, as the main thread imports this module.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_FROM_PROC = _umask_from_proc()
_UMASK_AT_IMPORT: int = _umask_by_setting() if _FROM_PROC is None else _FROM_PROC


def current_umask() -> int:
    """The process's umask now (Linux), else the one it had when it imported this."""
    mask = _umask_from_proc()
    return _UMASK_AT_IMPORT if mask is None else mask


def file_mode() -> int:
    """The mode open(2) would give a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> None:
    """Write a file so that readers see either the old content or the new, never a mix.

    durable=False skips the fsyncs: still atomic for every process, but a power cut may
    lose it. Only for files that matter no longer than the process that reads them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), file_mode())  # mkstemp's 0600 → what the umask gives
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str, durable: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), durable)


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: Path, obj: Any, durable: bool = True) -> None:
    atomic_write_text(path, to_json(obj), durable)


def read_json_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from a file, or None when it is missing, unreadable or not an object."""
    try:
        loaded = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def format_manifest(hashes: Mapping[str, str]) -> str:
    """sha256sum's format, so `sha256sum -c sha256.txt` works inside the folder."""
    return "".join(f"{digest}  {name}\n" for name, digest in sorted(hashes.items()))


def parse_manifest(text: str) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64:
            raise ValueError(f"malformed manifest line: {line!r}")
        hashes[name.lstrip("*")] = digest
    return hashes


def artifact_files(folder: Path) -> list[Path]:
    """The artifacts of an attempt: every plain file but the manifest and temp files."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.name != MANIFEST_NAME and not p.name.startswith(".")
    )


def write_manifest(folder: Path, files: Iterable[Path] | None = None, durable: bool = True) -> str:
    """Hash the attempt's artifacts into sha256.txt; return the manifest's own sha256."""
    chosen = artifact_files(folder) if files is None else list(files)
    text = format_manifest({p.name: sha256_file(p) for p in chosen})
    atomic_write_text(folder / MANIFEST_NAME, text, durable)
    return sha256_bytes(text.encode("utf-8"))


def verify_manifest(folder: Path, manifest_sha256: str | None = None) -> list[str]:
    """Re-hash an attempt's artifacts; return the problems found (empty: it verifies)."""
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        return [f"{manifest}: missing"]
    raw = manifest.read_bytes()
    if manifest_sha256 is not None and sha256_bytes(raw) != manifest_sha256:
        return [f"{manifest}: differs from the one recorded in the ledger"]
    try:
        expected = parse_manifest(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return [f"{manifest}: {exc}"]
    problems: list[str] = []
    if not expected:
        problems.append(f"{manifest}: lists no artifact")
    for name, digest in sorted(expected.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: sha256 mismatch")
    return problems
