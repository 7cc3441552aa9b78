"""A symbol's models as they lie under `models/<SYMBOL>/`: the champion, the challengers, the rest.

Pure reading. The champion is what `CHAMPION` names, re-verified against the manifest
hash it recorded. A challenger is a successful attempt (a folder with sha256.txt and
metrics.json) newer than the champion, or any successful attempt while there is no
champion. Everything else (older successes, failed attempts) is counted with its size:
what `retrainer prune` is for.

An attempt's time is the stamp in its folder's name (`YYYYMMDD_HHMMSSZ[-n]`, UTC), else
the folder's mtime (a folder renamed by hand).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import MANIFEST_NAME, Layout, read_json_object
from retrainer.base.clock import iso
from retrainer.registry.champion import (
    Champion,
    ChampionError,
    champion_problems,
    read_champion,
)

# The metrics a listing shows first; the rest stay in metrics.json and the pointer.
HEADLINE_METRICS = ("test_log_loss", "accuracy_edge", "net_sharpe", "test_accuracy")
METRICS_FILE = "metrics.json"
# A candidate of a search or a backtest window carries its tag: 20261123_020000Z_c03.
_STAMP = re.compile(r"(\d{8}_\d{6}Z)(?:_[a-z]\w*)?(?:-\d+)?")


def stamp_time(name: str) -> datetime | None:
    """The UTC time in an attempt folder's name (20261123_020000Z; _c03, -1 allowed)."""
    match = _STAMP.fullmatch(name)
    if match is None:
        return None
    try:
        return datetime.strptime(match[1], "%Y%m%d_%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:  # 20261399_...: the shape of a stamp, not a time
        return None


def attempt_time(folder: Path) -> datetime:
    """When the attempt began: its name's stamp, else the folder's mtime."""
    return stamp_time(folder.name) or datetime.fromtimestamp(folder.stat().st_mtime, UTC)


def attempt_folders(layout: Layout, symbol: str) -> list[Path]:
    """The symbol's attempt folders, by name: every folder under models/<SYMBOL>/ but the
    hidden ones (temp and half-removed folders)."""
    base = layout.model_dir(symbol)
    if not base.is_dir():
        return []
    return sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))


def is_success(folder: Path) -> bool:
    """Finished: a manifest and metrics.json (metrics are written last; docs/output.md)."""
    return (folder / MANIFEST_NAME).is_file() and (folder / METRICS_FILE).is_file()


def folder_bytes(folder: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except OSError:
                pass  # gone meanwhile
    return total


def headline(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: metrics[k] for k in HEADLINE_METRICS if metrics and k in metrics}


@dataclass(frozen=True)
class ChampionInfo:
    folder: str  # relative to the root
    promoted_at: str
    age_s: float | None
    decision: str
    reason: str
    run_id: str
    trainer: str
    metrics: dict[str, Any]  # the headline ones
    problems: tuple[str, ...]  # empty: the folder is the one promoted

    @property
    def verifies(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class ModelFolder:
    folder: str  # relative to the root
    made_at: str  # ISO, UTC
    age_s: float
    metrics: dict[str, Any]  # the headline ones

    @property
    def name(self) -> str:
        return self.folder.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class SymbolModels:
    symbol: str
    champion: ChampionInfo | None
    pointer_error: str | None  # CHAMPION exists but cannot be read
    challengers: tuple[ModelFolder, ...]  # newest first
    older: int  # attempt folders neither champion nor challenger
    older_bytes: int

    @property
    def ok(self) -> bool:
        """No broken pointer, and a champion (if any) that verifies."""
        return self.pointer_error is None and (self.champion is None or self.champion.verifies)

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        if self.champion is not None:
            raw["champion"]["verifies"] = self.champion.verifies
        return raw


def list_models(layout: Layout, symbol: str, now: datetime) -> SymbolModels:
    """The symbol's champion (its folder re-verified), challengers and the rest."""
    champion, pointer_error = _read_pointer(layout, symbol)
    champion_dir = champion.artifact_dir if champion is not None else None
    since = _champion_time(layout, champion) if champion is not None else None
    challengers: list[ModelFolder] = []
    older, older_bytes = 0, 0
    for folder in attempt_folders(layout, symbol):
        relative = layout.relative(folder)
        if relative == champion_dir:
            continue
        made = attempt_time(folder)
        if is_success(folder) and (since is None or made > since):
            metrics = headline(read_json_object(folder / METRICS_FILE))
            challengers.append(ModelFolder(relative, iso(made), _age(now, made), metrics))
        else:
            older, older_bytes = older + 1, older_bytes + folder_bytes(folder)
    info = None if champion is None else _champion_info(layout, champion, now)
    challengers.sort(key=lambda m: m.made_at, reverse=True)
    return SymbolModels(symbol, info, pointer_error, tuple(challengers), older, older_bytes)


def _read_pointer(layout: Layout, symbol: str) -> tuple[Champion | None, str | None]:
    try:
        return read_champion(layout, symbol), None
    except ChampionError as exc:
        return None, str(exc)


def _champion_info(layout: Layout, champion: Champion, now: datetime) -> ChampionInfo:
    promoted = _parse_iso(champion.promoted_at)
    # The folder's metrics.json (all of them) first; the pointer's copy where it has none.
    on_disk = read_json_object(champion.folder(layout.root) / METRICS_FILE) or {}
    metrics = headline({**champion.metrics, **on_disk})
    return ChampionInfo(
        folder=champion.artifact_dir,
        promoted_at=champion.promoted_at,
        age_s=None if promoted is None else _age(now, promoted),
        decision=champion.decision,
        reason=champion.reason,
        run_id=champion.run_id,
        trainer=champion.trainer,
        metrics=metrics,
        problems=tuple(champion_problems(layout, champion)),
    )


def _champion_time(layout: Layout, champion: Champion) -> datetime | None:
    """When the champion's attempt began: its folder's time, else when it was promoted."""
    folder = champion.folder(layout.root)
    try:
        return attempt_time(folder)
    except OSError:
        return stamp_time(folder.name) or _parse_iso(champion.promoted_at)


def _parse_iso(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _age(now: datetime, then: datetime) -> float:
    return max(0.0, round((now - then).total_seconds(), 3))
