"""Settings: defaults ← config file (TOML) ← RETRAINER_* environment ← CLI flags.

This is the only module that reads files or the environment for settings. Relative paths
in a config file are taken relative to that file's folder (so a cron job's working folder
does not matter); relative paths from the environment or flags, relative to the current
folder.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retrainer.base.errors import BadInputError

ENV_PREFIX = "RETRAINER_"
CONFIG_ENV = "RETRAINER_CONFIG"
DEFAULT_TRAINER = "retrainer.training.trainer:train"
# Keys holding paths, per section: resolved against the config file's folder.
PATH_KEYS = {
    ("run", "root"),
    ("data", "path"),
    ("storage", "path"),
    ("storage", "secrets_file"),
    ("notify", "secrets_file"),
}


class Mode(StrEnum):
    SEQUENTIAL = "sequential"
    PARALLEL = "parallel"
    HYBRID = "hybrid"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RunSettings(_Section):
    mode: Mode = Mode.HYBRID
    max_concurrent: int | None = Field(default=None, gt=0, description="None: 12 on GPU, 2 on CPU")
    symbols: str = Field(default="top20", min_length=1)
    timeout_minutes: float = Field(default=45.0, gt=0)
    retries: int = Field(default=2, ge=0, le=100)
    driver: Literal["local"] = "local"
    root: Path = Path(".")
    seed: int = Field(default=42, ge=0, lt=2**31)
    kill_grace_s: float = Field(default=10.0, ge=0)
    stop_grace_s: float = Field(
        default=30.0, ge=0, description="on SIGTERM/SIGINT: time running items get to finish"
    )
    max_memory_mb: int | None = Field(
        default=None, gt=0, description="None: 80% of RAM shared by the window"
    )
    backoff_base_s: float = Field(default=5.0, gt=0)
    backoff_cap_s: float = Field(default=300.0, gt=0)


class DataSettings(_Section):
    path: Path = Path("data")
    min_rows: int = Field(default=1000, ge=10)
    topn_window_days: int = Field(default=30, gt=0)


class FeeOverride(_Section):
    taker_fee_bps: float | None = Field(default=None, ge=0)
    maker_fee_bps: float | None = Field(default=None, ge=-100)


class CostSettings(_Section):
    taker_fee_bps: float = Field(default=10.0, ge=0)
    maker_fee_bps: float = Field(default=2.0, ge=-100)
    spread_window_days: int = Field(default=30, gt=0)
    overrides: dict[str, FeeOverride] = Field(default_factory=dict)


class TrainerSettings(_Section):
    plugin: str = Field(default=DEFAULT_TRAINER, pattern=r"^[\w.]+:\w+$")
    params: dict[str, Any] = Field(default_factory=dict)


class StorageSettings(_Section):
    kind: Literal["none", "local", "s3", "dropbox"] = "none"
    path: Path | None = None
    # Remote stores (s3, dropbox): objects go under prefix, mirroring the local layout.
    prefix: str = Field(default="", pattern=r"^[^\\]*$")
    bucket: str | None = Field(default=None, min_length=3, max_length=63)
    region: str | None = None
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    multipart_threshold_mb: float = Field(default=8.0, ge=5.0)
    chunk_mb: float = Field(default=8.0, ge=5.0, le=150.0)
    max_concurrency: int = Field(default=4, gt=0, le=64)
    max_attempts: int = Field(default=5, gt=0, le=20)
    secrets_file: Path | None = None
    upload_partials: bool = False
    upload_workers: int = Field(default=2, gt=0, le=32)


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class NotifySettings(_Section):
    """Who hears about a run. The token and chat id are secrets: never keys here."""

    enabled: bool = True
    kind: Literal["null", "telegram"] = "null"
    api_url: str = Field(default="https://api.telegram.org", pattern=r"^https?://\S+$")
    secrets_file: Path | None = None
    batch_window_s: float = Field(default=60.0, ge=0)
    escalate_share: float = Field(default=0.5, gt=0, le=1)
    attach_summary: bool = True
    request_timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    close_timeout_s: float = Field(default=20.0, gt=0)


class Settings(_Section):
    run: RunSettings = RunSettings()
    data: DataSettings = DataSettings()
    costs: CostSettings = CostSettings()
    trainer: TrainerSettings = TrainerSettings()
    storage: StorageSettings = StorageSettings()
    logging: LoggingSettings = LoggingSettings()
    notify: NotifySettings = NotifySettings()


def load_settings(
    config_path: Path | None = None,
    cli: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge every source, validate once, and name the key or file on any error."""
    environ = os.environ if environ is None else environ
    if config_path is None and environ.get(CONFIG_ENV):
        config_path = Path(environ[CONFIG_ENV])
    merged: dict[str, Any] = {}
    source = "defaults"
    if config_path is not None:
        merged = read_config_file(config_path)
        source = str(config_path)
    _overlay(merged, _absolute_paths(env_overrides(environ), Path.cwd()))
    _overlay(merged, _absolute_paths({k: dict(v) for k, v in (cli or {}).items()}, Path.cwd()))
    try:
        settings = Settings.model_validate(merged)
    except ValidationError as exc:
        raise BadInputError(
            f"invalid settings (from {source}, environment, flags): "
            + describe_validation_error(exc)
        ) from None
    if settings.storage.kind == "local" and settings.storage.path is None:
        raise BadInputError(f'{source}: storage.path is required when storage.kind = "local"')
    if settings.storage.kind == "s3" and settings.storage.bucket is None:
        raise BadInputError(f'{source}: storage.bucket is required when storage.kind = "s3"')
    return settings


def read_config_file(path: Path) -> dict[str, Any]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise BadInputError(f"config file {path}: cannot be read ({exc.strerror})") from None
    try:
        parsed = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"config file {path}: not valid TOML ({exc})") from None
    _reject_nul(parsed, str(path))
    base = path.resolve().parent
    run = parsed.get("run")
    if isinstance(run, dict) and str(run.get("symbols", "")).lower().endswith(".csv"):
        run["symbols"] = str((base / Path(run["symbols"]).expanduser()).resolve())
    return _absolute_paths(parsed, base)


def _reject_nul(tree: Any, where: str, key: str = "") -> None:
    """A NUL byte (TOML allows "\\u0000") is in no path, symbol or name: refuse it here,
    naming the key, before it reaches the OS as a ValueError."""
    if isinstance(tree, dict):
        for name, value in tree.items():
            _reject_nul(value, where, f"{key}.{name}" if key else str(name))
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            _reject_nul(value, where, f"{key}[{index}]")
    elif isinstance(tree, str) and "\0" in tree:
        raise BadInputError(f"config file {where}: {key} contains a NUL character")


def env_overrides(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """RETRAINER_<SECTION>__<KEY>=value, e.g. RETRAINER_RUN__MODE=parallel."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in environ.items():
        if not name.startswith(ENV_PREFIX) or "__" not in name:
            continue
        section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
        out.setdefault(section, {})[key] = _env_value(value)
    return out


def _env_value(value: str) -> Any:
    # Tables and lists (trainer params) come as JSON; everything else pydantic coerces.
    if value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _absolute_paths(tree: dict[str, Any], base: Path) -> dict[str, Any]:
    for section, key in PATH_KEYS:
        table = tree.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), str | Path):
            table[key] = (base / Path(table[key]).expanduser()).resolve()
    return tree


def _overlay(base: dict[str, Any], top: Mapping[str, Any]) -> None:
    """Deep-merge `top` into `base`; None means "not given" and never overrides."""
    for key, value in top.items():
        if isinstance(value, Mapping):
            if not isinstance(base.get(key), dict):
                base[key] = {}
            _overlay(base[key], value)
        elif value is not None:
            base[key] = value


def describe_validation_error(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            parts.append(f"{key}: unknown key")
        else:
            parts.append(f"{key}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)
