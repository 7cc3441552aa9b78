"""What MLflow holds of a night, and the calls that put it there (mlflow_tracking.py
makes them from its thread): an attempt's run (tags, params, metrics, files or their
location), its registered model version, the `champion` alias, the night's parent run.

The record-building functions are pure; MlflowTracker is the only code that talks to
MLflow, and it imports mlflow when built, never at import time.
"""

from __future__ import annotations

import importlib.util
import json
import math
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from retrainer.base.artifacts import (
    CHAMPION_EVAL_FILE,
    FINAL_ARTIFACTS,
    MANIFEST_NAME,
    Layout,
    read_json_object,
)
from retrainer.base.config import MlflowSettings
from retrainer.base.optional import MissingExtraError, import_optional
from retrainer.ledger.entries import LedgerEntry
from retrainer.registry.gate import Decision

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

MLFLOW_LOGGED: Final = "mlflow_logged"
MLFLOW_FAILED: Final = "mlflow_failed"
CHAMPION_ALIAS: Final = "champion"
# What an attempt's run holds with artifacts = "log" (features.parquet stays out: big,
# and rebuilt from the data).
LOGGED_FILES: Final = (*FINAL_ARTIFACTS, MANIFEST_NAME, CHAMPION_EVAL_FILE)
CHAMPION_DECISIONS: Final = frozenset({Decision.PROMOTED.value, Decision.FIRST_MODEL.value})
# Servers choose their own artifact store; any other store (SQLite, a database) would
# default to ./mlruns under the working directory, which a cron job does not choose.
_SERVER_SCHEMES: Final = ("http", "https", "databricks")
# MLflow's limits: keys of 250 characters, values of 6000 (params) or 5000 (tags, older
# servers), 100 params / 100 tags / 1000 metrics in one log_batch.
_KEY_MAX, _PARAM_MAX, _TAG_MAX, _BATCH = 250, 6000, 5000, 100
_BAD_KEY_CHARS = re.compile(r"[^\w./\- :]")


def require_mlflow() -> None:
    """Raise MissingExtraError unless mlflow is installed (found, not imported)."""
    if importlib.util.find_spec("mlflow") is None:
        raise MissingExtraError("mlflow", "mlflow")


def tracking_uri(settings: MlflowSettings, root: Path) -> str:
    """The configured URI, else a SQLite store under the root."""
    if settings.tracking_uri:
        return settings.tracking_uri
    return f"sqlite:///{(root / 'mlflow' / 'mlflow.db').resolve()}"


def artifact_location(uri: str, root: Path) -> str | None:
    """Where a new experiment keeps its artifacts: the server's choice, else the root's."""
    if uri.partition(":")[0] in _SERVER_SCHEMES:
        return None
    return (root / "mlflow" / "artifacts").resolve().as_uri()


# ---------------------------------------------------------------- what a run holds (pure)


def flatten(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Nested mappings as dotted keys: {"a": {"b": 1}} -> ("a.b", 1)."""
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from flatten(value, f"{name}.")
        else:
            yield name, value


def mlflow_key(name: str) -> str:
    """A key MLflow accepts: letters, digits and _ - . / : space; 250 characters."""
    return _BAD_KEY_CHARS.sub("_", name)[:_KEY_MAX]


def run_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The trainer's params (config.json "params", flattened) and the seed, as strings."""
    params = dict(flatten(config.get("params") or {}))
    if "seed" in config:
        params["seed"] = config["seed"]
    return {
        mlflow_key(k): (v if isinstance(v, str) else json.dumps(v))[:_PARAM_MAX]
        for k, v in params.items()
    }


def run_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of metrics.json (flattened); flags, text and None stay out."""
    return {
        mlflow_key(k): float(v)
        for k, v in flatten(metrics)
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def attempt_tags(
    item_id: str,
    out_dir: Path,
    entry: LedgerEntry | None,
    config: Mapping[str, Any],
    run_id: str,
    trainer: str,
) -> dict[str, str]:
    """Who made the attempt, where it lies, what the gate decided (retrainer.* tags)."""
    last = entry.last_attempt if entry else None
    promotion = (entry.promotion if entry else None) or {}
    tags = {
        "symbol": entry.symbol if entry else item_id,
        "item_id": item_id,
        "run_id": run_id,
        "trainer": trainer,
        "attempt_dir": out_dir.name,
        "attempt": last.number if last else None,
        "node": last.node if last else None,
        "device": config.get("device") or (last.device if last else None),
        "manifest_sha256": entry.manifest_sha256 if entry else None,
        "data_sha256": config.get("data_sha256"),
        "code_version": config.get("code_version"),
        "decision": promotion.get("decision", "none"),
        "decision_reason": promotion.get("reason"),
        "decision_basis": promotion.get("basis"),
    }
    return {f"retrainer.{k}": str(v)[:_TAG_MAX] for k, v in tags.items() if v not in (None, "")}


def _chunks(items: Sequence[Any], size: int = _BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# ------------------------------------------------------------------------- the tasks


@dataclass(frozen=True)
class Success:
    item_id: str
    out_dir: Path
    entry: LedgerEntry | None  # as the ledger held it when the success was recorded


@dataclass(frozen=True)
class Failure:
    item_id: str
    reason: str
    entry: LedgerEntry | None


@dataclass(frozen=True)
class NightEnd:
    summary: Mapping[str, Any] | None


Task = Success | Failure | NightEnd


# ------------------------------------------------------------- the MLflow side (thread)


class MlflowTracker:
    """The MLflow calls, made from the listener's thread only."""

    def __init__(self, settings: MlflowSettings, layout: Layout, run_id: str, trainer: str):
        mlflow_tracking = import_optional("mlflow.tracking", "mlflow")
        self.uri = tracking_uri(settings, layout.root)
        if settings.tracking_uri is None:  # SQLite creates the file, not its folder
            (layout.root / "mlflow").mkdir(parents=True, exist_ok=True)
        self.client: MlflowClient = mlflow_tracking.MlflowClient(self.uri, self.uri)
        self.settings, self.run_id, self.trainer = settings, run_id, trainer
        self.experiment_id = self._experiment(artifact_location(self.uri, layout.root))
        night = self.client.create_run(
            self.experiment_id,
            run_name=f"night {run_id}",
            tags={
                "retrainer.kind": "night",
                "retrainer.run_id": run_id,
                "retrainer.trainer": trainer,
            },
        )
        self.night_run_id = night.info.run_id

    def _experiment(self, location: str | None) -> str:
        name = self.settings.experiment
        found = self.client.get_experiment_by_name(name)
        if found is None:
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except Exception:  # another head created it meanwhile
                found = self.client.get_experiment_by_name(name)
                if found is None:
                    raise
        if found.lifecycle_stage != "active":
            raise RuntimeError(f"MLflow experiment {name!r} is deleted: restore it or rename")
        return str(found.experiment_id)

    def log_success(self, task: Success) -> dict[str, Any]:
        config = read_json_object(task.out_dir / "config.json") or {}
        tags = attempt_tags(
            task.item_id, task.out_dir, task.entry, config, self.run_id, self.trainer
        )
        symbol = tags["retrainer.symbol"]
        if self.settings.artifacts == "uri":
            tags["retrainer.artifact_uri"] = task.out_dir.resolve().as_uri()
        run = self._start_run(f"{symbol} {task.out_dir.name}", tags)
        run_id = run.info.run_id
        self._log_values(
            run_id,
            run_params(config),
            run_metrics(read_json_object(task.out_dir / "metrics.json") or {}),
        )
        if self.settings.artifacts == "log":
            for name in LOGGED_FILES:
                if (task.out_dir / name).is_file():
                    self.client.log_artifact(run_id, str(task.out_dir / name))
            if task.entry is not None and task.entry.promotion:
                self.client.log_dict(run_id, task.entry.promotion, "promotion.json")
        self.client.set_terminated(run_id, "FINISHED")
        version = self._register(symbol, run.info.artifact_uri, run_id, tags)
        return {"mlflow_run_id": run_id, "model": self.settings.model_prefix + symbol, **version}

    def _register(
        self, symbol: str, source: str, run_id: str, tags: dict[str, str]
    ) -> dict[str, Any]:
        """A new version of <prefix><symbol>; the alias moves only if the gate says so."""
        name = self.settings.model_prefix + symbol
        self._registered_model(name, symbol)
        version_tags = {k: v for k, v in tags.items() if k != "retrainer.item_id"}
        # OSS stores register at once; a server that copies the files reports it later.
        version = self.client.create_model_version(
            name, source, run_id=run_id, tags=version_tags, await_creation_for=0
        )
        champion = tags.get("retrainer.decision") in CHAMPION_DECISIONS
        if champion:
            self.client.set_registered_model_alias(name, CHAMPION_ALIAS, version.version)
        return {"version": int(version.version), "champion": champion}

    def _registered_model(self, name: str, symbol: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, tags={"retrainer.symbol": symbol})
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise

    def log_failure(self, task: Failure) -> dict[str, Any]:
        entry, last = task.entry, task.entry.last_attempt if task.entry else None
        symbol = entry.symbol if entry else task.item_id
        folder = Path(last.artifact_dir).name if last else "failed"
        tags = {
            "retrainer.symbol": symbol,
            "retrainer.item_id": task.item_id,
            "retrainer.run_id": self.run_id,
            "retrainer.trainer": self.trainer,
            "retrainer.reason": task.reason[:_TAG_MAX],
        }
        if last is not None:
            tags["retrainer.attempt"] = str(last.number)
            tags["retrainer.attempt_dir"] = folder
        run = self._start_run(f"{symbol} {folder}", tags)
        self.client.set_terminated(run.info.run_id, "FAILED")
        return {"mlflow_run_id": run.info.run_id}

    def end_night(self, task: NightEnd) -> dict[str, Any]:
        """The night's run: the summary's counts as metrics, its exit code as a tag."""
        summary = task.summary or {}
        metrics = run_metrics({k: v for k, v in summary.items() if not isinstance(v, Mapping)})
        tags = {"retrainer.exit_code": str(summary["exit_code"])} if "exit_code" in summary else {}
        self._log_values(self.night_run_id, {}, metrics, tags)
        self.client.set_terminated(self.night_run_id, "FINISHED" if task.summary else "KILLED")
        return {"mlflow_run_id": self.night_run_id}

    def _start_run(self, name: str, tags: dict[str, str]) -> Run:
        tags = {**tags, "mlflow.parentRunId": self.night_run_id}
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags)

    def _log_values(
        self,
        run_id: str,
        params: Mapping[str, str],
        metrics: Mapping[str, float],
        tags: Mapping[str, str] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now_ms = int(time.time() * 1000)
        for chunk in _chunks([Param(k, v) for k, v in params.items()]):
            self.client.log_batch(run_id, params=list(chunk))
        for chunk in _chunks([Metric(k, v, now_ms, 0) for k, v in metrics.items()], 1000):
            self.client.log_batch(run_id, metrics=list(chunk))
        for chunk in _chunks([RunTag(k, v) for k, v in (tags or {}).items()]):
            self.client.log_batch(run_id, tags=list(chunk))
