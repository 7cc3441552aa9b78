"""The model in production for each symbol: `models/<SYMBOL>/CHAMPION`, an atomic pointer.

The pointer is a small JSON file beside the symbol's attempt folders. It names the
champion's folder (relative to the root) and the sha256 of its manifest, so that a reader
can check the folder is the one that was promoted, and keeps what the gate saw: the
headline metrics, when and why it was promoted, the run, and the fingerprint of the inputs
it was trained on (freshness.py). It is replaced by an atomic rename, never edited: a
reader sees the old champion or the new one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import Layout, atomic_write_json, verify_manifest

CHAMPION_FILE = "CHAMPION"
POINTER_FORMAT = "retrainer.champion/1"


class ChampionError(Exception):
    """A pointer that cannot be read, or names a folder that does not verify."""


@dataclass(frozen=True)
class Champion:
    symbol: str
    artifact_dir: str  # relative to the root
    manifest_sha256: str
    promoted_at: str
    run_id: str
    decision: str  # promoted | first_model (how it became champion)
    reason: str
    trainer: str = ""  # "package.module:function" that trained it
    inputs_key: str | None = None  # freshness.inputs_key of what it was trained on
    metrics: dict[str, Any] = field(default_factory=dict)
    previous: str | None = None  # the champion it replaced (its folder), if any

    def to_dict(self) -> dict[str, Any]:
        return {"format": POINTER_FORMAT, **vars(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Champion:
        if raw.get("format") != POINTER_FORMAT:
            raise ChampionError(f"not a {POINTER_FORMAT} pointer (format {raw.get('format')!r})")
        fields = {k: v for k, v in raw.items() if k != "format"}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise ChampionError(f"malformed pointer: {exc}") from None

    def folder(self, root: Path) -> Path:
        return root / self.artifact_dir


def pointer_path(layout: Layout, symbol: str) -> Path:
    return layout.model_dir(symbol) / CHAMPION_FILE


def read_champion(layout: Layout, symbol: str) -> Champion | None:
    """The symbol's champion, or None when it has none; ChampionError for a bad pointer."""
    path = pointer_path(layout, symbol)
    try:
        raw = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ChampionError(f"{path}: cannot be read ({exc})") from None
    if not isinstance(raw, dict):
        raise ChampionError(f"{path}: not a JSON object")
    try:
        return Champion.from_dict(raw)
    except ChampionError as exc:
        raise ChampionError(f"{path}: {exc}") from None


def write_champion(layout: Layout, champion: Champion) -> Path:
    """Replace the pointer atomically (fsynced: a promotion survives a power cut)."""
    path = pointer_path(layout, champion.symbol)
    atomic_write_json(path, champion.to_dict())
    return path


def champion_problems(layout: Layout, champion: Champion) -> list[str]:
    """Why the champion's folder is not the one promoted (empty: it verifies)."""
    return verify_manifest(champion.folder(layout.root), champion.manifest_sha256)


def symbols_with_models(layout: Layout) -> list[str]:
    """Every symbol that has a folder under models/, sorted."""
    base = layout.root / "models"
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
