"""Settings: defaults ← config file (TOML) ← RETRAINER_* environment ← CLI flags.

This is the only module that reads files or the environment for settings. Relative paths
in a config file are taken relative to that file's folder (so a cron job's working folder
does not matter); relative paths from the environment or flags, relative to the current
folder.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from collections.abc import Mapping
from datetime import UTC, datetime
from datetime import time as dt_time
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from retrainer.base.errors import BadInputError
from retrainer.base.logs import MASK, is_secret_key

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
    ("healthchecks", "secrets_file"),
    ("prometheus", "textfile"),
    ("prometheus", "secrets_file"),
}
# Keys holding lists of paths, resolved the same way.
PATH_LIST_KEYS = {("trainer", "paths")}
# An HTTP header name (RFC 9110 token).
HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
# [run] deadline: a local time of day, 06:00 or 06:00:30.
TIME_OF_DAY = re.compile(r"([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?")


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
    driver: Literal["local", "ray", "dask"] = "local"
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
    # A symbol whose data, trainer, params, costs and code are those its champion was
    # trained on is skipped as `fresh` (--force trains it anyway).
    skip_fresh: bool = True
    # False: a successful attempt's features.parquet is removed before its manifest is
    # written (a retry of a failed attempt still reuses it); it is most of a model folder.
    keep_features: bool = True
    # Smarter nights (docs/scheduling.md). The queue: "longest_first" by each symbol's
    # duration in past ledgers (new symbols first), or "plan": as the plan lists them.
    order: Literal["longest_first", "plan"] = "longest_first"
    # Local time ("06:00") by which the night must be done: the plan warns when its forecast
    # misses it; past it no item starts (the rest: not_started, deadline). None: no deadline.
    # Seconds may be given too ("06:00:30").
    deadline: str | None = None
    # Memory admission: an item starts only while the expected peaks of the running items
    # and its own fit in this budget (None: the machine's RAM less memory_reserve_mb).
    memory_budget_mb: int | None = Field(default=None, gt=0)
    memory_reserve_mb: int = Field(default=1024, ge=0)
    # Retries the whole run may spend (None: `retries` for each item, no global cap).
    retry_budget: int | None = Field(default=None, ge=0)
    # The share of items that may fail with the run still exiting 0 (and alerting softly).
    tolerated_failure_ratio: float = Field(default=0.0, ge=0, le=1)
    # A symbol that failed this many nights in a row is quarantined: skipped until --force
    # or `retrainer unquarantine SYMBOL`. None: never.
    quarantine_after_nights: int | None = Field(default=3, ge=1)
    # Two stages (docs/scheduling.md): a trainer with a `prepare` step runs it (features,
    # CPU) on slots of its own while the train slots (the GPU's) only train. "auto": on a
    # local GPU machine; "on": also on CPU (the simulation); "off": one stage.
    two_stage: Literal["auto", "on", "off"] = "auto"
    # Prepare slots beside the train window (None: the cores the window leaves, at least 1).
    prepare_slots: int | None = Field(default=None, gt=0)

    @field_validator("deadline", mode="before")
    @classmethod
    def _a_time_of_day(cls, value: Any) -> Any:
        if isinstance(value, dt_time):  # TOML's own local time: deadline = 06:00
            value = value.strftime("%H:%M:%S" if value.second else "%H:%M")
        if isinstance(value, str) and not TIME_OF_DAY.fullmatch(value):
            raise ValueError("not a local time of day: expected HH:MM, such as 06:00")
        return value


class DataColumns(_Section):
    """[data.columns]: the name each of our columns has in the files (`timestamp = "date"`,
    `open = "Open"`…); one not given is spelled as ours."""

    timestamp: str = Field(default="timestamp", min_length=1)
    open: str = Field(default="open", min_length=1)
    high: str = Field(default="high", min_length=1)
    low: str = Field(default="low", min_length=1)
    close: str = Field(default="close", min_length=1)
    volume: str = Field(default="volume", min_length=1)

    def renamed(self) -> dict[str, str]:
        """Ours -> the files', for the columns spelled otherwise."""
        return {ours: theirs for ours, theirs in self.model_dump().items() if ours != theirs}


class DataSettings(_Section):
    path: Path = Path("data")
    min_rows: int = Field(default=1000, ge=10)
    topn_window_days: int = Field(default=30, gt=0)
    # A symbol whose data file is bad (NaN bar, duplicate timestamp, unreadable, too few
    # rows): "skip" records it failed, trains the others and exits 1; "fail" stops the
    # whole run before anything starts (exit 2).
    on_bad: Literal["skip", "fail"] = "skip"
    columns: DataColumns = DataColumns()
    # A symbol whose last bar is older than this (at plan time) is flagged stale in the
    # plan, the summary and the report; None: never.
    stale_after_hours: float | None = Field(default=72.0, gt=0)
    # The unit of timestamps stored as epoch numbers: "s", "ms", "us" or "ns" (None: such
    # timestamps are refused; ISO-8601 text and typed timestamps need no unit).
    timestamp_unit: Literal["s", "ms", "us", "ns"] | None = None

    @field_validator("columns")
    @classmethod
    def _one_file_column_each(cls, columns: DataColumns) -> DataColumns:
        seen: dict[str, str] = {}
        for ours, theirs in columns.model_dump().items():
            if theirs in seen:
                raise ValueError(f"{seen[theirs]} and {ours} both read the column {theirs!r}")
            seen[theirs] = ours
        return columns


# The asset classes of retrainer.base.costs.ASSET_CLASSES (a test keeps the two equal).
AssetClass = Literal["crypto", "equity", "fx", "futures", "index"]


class FeeOverride(_Section):
    """[costs.overrides.SYMBOL]: what differs for one symbol (None: as its class has it)."""

    taker_fee_bps: float | None = Field(default=None, ge=0)
    maker_fee_bps: float | None = Field(default=None, ge=-100)
    asset_class: AssetClass | None = None
    # A known half-spread: used instead of the Corwin-Schultz estimate.
    half_spread_bps: float | None = Field(default=None, ge=0)
    # False: evaluated, but no net P&L (an index); None: as its asset class.
    tradable: bool | None = None
    # The symbol's calendar (252 for daily stock bars); None: observed from its timestamps.
    bars_per_year: float | None = Field(default=None, gt=0)


class CostSettings(_Section):
    # The class of every symbol without its own `asset_class`: its fees and fallback
    # half-spread come from the class's defaults unless set here.
    asset_class: AssetClass = "crypto"
    # Fees of the symbols in `asset_class` (None: the class's default); per-symbol ones win.
    taker_fee_bps: float | None = Field(default=None, ge=0)
    maker_fee_bps: float | None = Field(default=None, ge=-100)
    # The Corwin-Schultz window: the bars of the last spread_window_days, and at least the
    # last min_spread_pairs + 1 bars; fewer usable pairs than min_spread_pairs, and the
    # half-spread is the default one (half_spread_source "default").
    spread_window_days: int = Field(default=90, gt=0)
    min_spread_pairs: int = Field(default=20, ge=1)
    default_half_spread_bps: float | None = Field(default=None, ge=0)
    overrides: dict[str, FeeOverride] = Field(default_factory=dict)


class TrainerSettings(_Section):
    plugin: str = Field(default=DEFAULT_TRAINER, pattern=r"^[\w.]+:\w+$")
    params: dict[str, Any] = Field(default_factory=dict)
    # Folders searched for the plug-in before anything installed, as PYTHONPATH would be
    # (relative: to the config file's folder): put on sys.path before the trainer loads,
    # in the scheduler and in every attempt's process.
    paths: list[Path] = Field(default_factory=list)


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
    # False: features.parquet stays on this machine (kept or not per [run] keep_features).
    upload_features: bool = True
    upload_workers: int = Field(default=2, gt=0, le=32)


class _ClusterSettings(_Section):
    """What the Ray and Dask drivers share: where attempts write on a node, and whether
    the nodes see the run's root."""

    # True: every node sees the root at the same path (NFS, Lustre, EFS): attempts write
    # there directly and nothing is shipped. False: data goes to each node through the
    # engine, and each finished attempt's folder comes back to the head.
    shared_root: bool = False
    # A node-local folder for shipped data and attempts in progress (None: its temp dir).
    scratch: str | None = None
    # A finished attempt's folder larger than this comes back through [storage] (S3…)
    # rather than the engine's object store; without a storage, through the engine.
    max_ship_mb: float = Field(default=64.0, gt=0)


class RaySettings(_ClusterSettings):
    """--driver ray: one Ray task per attempt, supervised on its node."""

    # None: a local Ray instance (this machine); else a cluster's address ("ray://…",
    # "HOST:6379", "auto").
    address: str | None = None
    namespace: str = Field(default="retrainer", min_length=1)
    # What each item asks of the cluster: the CPUs are its thread budget; GPUs may be
    # fractional (0.25: four items share one GPU).
    num_cpus: float = Field(default=1.0, gt=0)
    num_gpus: float = Field(default=0.0, ge=0)
    memory_mb: int | None = Field(default=None, gt=0)
    resources: dict[str, float] = Field(default_factory=dict)
    # Passed to ray.init as the job's runtime_env (env_vars, working_dir, pip…).
    runtime_env: dict[str, Any] = Field(default_factory=dict)


class DaskSettings(_ClusterSettings):
    """--driver dask: one Dask task per attempt, supervised on its worker."""

    # None: a LocalCluster on 127.0.0.1 of local_workers processes; else a scheduler's
    # address (tcp://HOST:8786), e.g. one dask-jobqueue started on SLURM.
    address: str | None = None
    local_workers: int | None = Field(default=None, gt=0)
    # Abstract resources each item takes from a worker (workers declare theirs, e.g.
    # `dask worker --resources "slots=1"`); empty: any worker thread.
    resources: dict[str, float] = Field(default_factory=dict)
    # The thread budget of each item on its worker.
    threads_per_item: int = Field(default=1, gt=0)


class BatchSettings(_Section):
    """`retrainer batch`: the night as one AWS Batch array job (docs/aws-batch.md)."""

    job_queue: str | None = Field(default=None, min_length=1)
    # A name, name:revision or ARN; `retrainer batch definition` registers one from below.
    job_definition: str | None = Field(default=None, min_length=1)
    # The image the job definition runs (docs/aws-batch.md builds it), e.g. an ECR URI.
    image: str | None = Field(default=None, min_length=1)
    platform: Literal["FARGATE", "EC2"] = "FARGATE"
    vcpus: float = Field(default=2.0, gt=0)
    memory_mb: int = Field(default=4096, ge=512)
    gpus: int = Field(default=0, ge=0)
    # The role the container runs as (it reads and writes the bucket); ECS's execution
    # role pulls the image on Fargate.
    job_role_arn: str | None = Field(default=None, pattern=r"^arn:")
    execution_role_arn: str | None = Field(default=None, pattern=r"^arn:")
    # Plain environment for every child (never secrets: they would show in the console).
    environment: dict[str, str] = Field(default_factory=dict)
    tags: dict[str, str] = Field(default_factory=dict)
    region: str | None = None
    # Another Batch API (LocalStack, a loopback fake in tests); None: AWS's own.
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    # How often `batch status --watch` asks Batch (jittered; throttling backs off further).
    poll_s: float = Field(default=30.0, gt=0)

    @field_validator("environment")
    @classmethod
    def _environment_holds_no_secret(cls, environment: dict[str, str]) -> dict[str, str]:
        secret = sorted(k for k in environment if is_secret_key(k))
        if secret:
            raise ValueError(
                f"{', '.join(secret)}: secrets do not go in the job's environment (the "
                "Batch console shows it); give the job role the access instead"
            )
        return environment


class PromotionRule(_Section):
    """A comparison the challenger must pass, in the style of MLflow's MetricThreshold."""

    metric: str = Field(min_length=1)
    greater_is_better: bool = True
    # The challenger's own value must reach this (champion or not).
    threshold: float | None = None
    # Better than the champion by at least this much (0: not worse); None: not compared.
    min_absolute_change: float | None = Field(default=None, ge=0)
    # Better than the champion by at least this share of |champion| (0.01: 1 %).
    min_relative_change: float | None = Field(default=None, ge=0)


class PromotionGuard(_Section):
    """A metric that must not degrade: worse than the champion by at most `tolerance`."""

    metric: str = Field(min_length=1)
    greater_is_better: bool = True
    tolerance: float = Field(default=0.0, ge=0)


def _default_rules() -> list[PromotionRule]:
    return [PromotionRule(metric="test_log_loss", greater_is_better=False, min_absolute_change=0)]


def _default_guards() -> list[PromotionGuard]:
    return [PromotionGuard(metric="accuracy_edge", greater_is_better=True, tolerance=0.02)]


class PromoteSettings(_Section):
    """When a challenger replaces the champion (`models/<SYMBOL>/CHAMPION`)."""

    # always: every verified success; gated: only one that passes the rules and guards;
    # never: the champion stays (a first model is still recorded, not promoted).
    mode: Literal["always", "gated", "never"] = "gated"
    rules: list[PromotionRule] = Field(default_factory=_default_rules)
    guards: list[PromotionGuard] = Field(default_factory=_default_guards)
    # A challenger judged on fewer test rows than this is never promoted by the gate.
    min_test_rows: int = Field(default=100, ge=1)


class MlflowSettings(_Section):
    """Each attempt as an MLflow run, each model a registered version; the `champion`
    alias moves only when the gate promotes. Needs the `mlflow` extra."""

    enabled: bool = False
    # None: a SQLite store under the root (sqlite:///<root>/mlflow/mlflow.db).
    tracking_uri: str | None = None
    experiment: str = Field(default="retrainer", min_length=1)
    # Registered model name: prefix + symbol.
    model_prefix: str = "retrainer-"
    # "log": the attempt's files are copied to the run's artifact store; "uri": only
    # their paths (and storage URIs) are logged as tags.
    artifacts: Literal["log", "uri"] = "log"
    close_timeout_s: float = Field(default=60.0, gt=0)


class BacktestSettings(_Section):
    """`retrainer backtest`: walk-forward windows per symbol (docs/backtests.md)."""

    # The backtest's folder (<root>/backtests/<name>) and ledger: rerun it to resume.
    name: str = Field(default="walkforward", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    # rolling: each fit sees the last window_bars bars; expanding: every bar since the
    # first window's start (window_bars is then the first window's size).
    mode: Literal["rolling", "expanding"] = "rolling"
    window_bars: int = Field(default=2000, ge=2)
    # Bars between two forecast origins; each fit forecasts refit_every x step_bars bars.
    step_bars: int = Field(default=200, ge=1)
    refit_every: int = Field(default=1, ge=1)
    # Bars left out between a fit's last bar (labels included) and its first forecast.
    embargo_bars: int = Field(default=0, ge=0)
    # The first and last forecast time (UTC); None: as early as a window fits, the last bar.
    start: datetime | None = None
    end: datetime | None = None

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @model_validator(mode="after")
    def _start_before_end(self) -> BacktestSettings:
        if self.start is not None and self.end is not None and self.start >= self.end:
            raise ValueError(
                f"backtest.start ({self.start.isoformat()}) must be before "
                f"backtest.end ({self.end.isoformat()})"
            )
        return self


class SearchSettings(_Section):
    """A per-symbol parameter search in the nightly run (docs/search.md): each (symbol,
    candidate) is an item; the best by the validation metric is the night's challenger."""

    enabled: bool = False
    # grid: every combination of the listed values (at most `budget`, in order); random:
    # `budget` draws, seeded, from the lists or {low, high, log} ranges.
    method: Literal["grid", "random"] = "grid"
    space: dict[str, list[Any] | dict[str, Any]] = Field(default_factory=dict)
    budget: int = Field(default=16, ge=1, le=10_000)
    seed: int = 0
    # The validation figure in each candidate's metrics.json that chooses (never the test's).
    metric: str = Field(default="best_val_loss", min_length=1)
    direction: Literal["min", "max"] = "min"


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"


class NotifySettings(_Section):
    """Who hears about a run. The token and chat id are secrets: never keys here."""

    enabled: bool = True
    kind: Literal["null", "telegram", "webhook"] = "null"
    api_url: str = Field(default="https://api.telegram.org", pattern=r"^https?://\S+$")
    secrets_file: Path | None = None
    # webhook: where to POST (a URL that holds a secret, as Slack's do, goes in
    # RETRAINER_WEBHOOK_URL or the secrets file instead), the body's shape, and headers
    # that hold no secret (those: RETRAINER_WEBHOOK_HEADER_<NAME> in the same places).
    url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    format: Literal["json", "slack"] = "json"
    headers: dict[str, str] = Field(default_factory=dict)
    batch_window_s: float = Field(default=60.0, ge=0)
    escalate_share: float = Field(default=0.5, gt=0, le=1)
    attach_summary: bool = True
    request_timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    close_timeout_s: float = Field(default=20.0, gt=0)

    @field_validator("headers")
    @classmethod
    def _headers_hold_no_secret(cls, headers: dict[str, str]) -> dict[str, str]:
        for name in headers:
            if not re.match(HEADER_NAME, name):
                raise ValueError(f"{name!r} is not an HTTP header name")
            if is_secret_key(name):
                variable = "RETRAINER_WEBHOOK_HEADER_" + name.upper().replace("-", "_")
                raise ValueError(
                    f"header {name!r} holds a secret: set {variable} in the environment "
                    "or the secrets file instead"
                )
        return headers


class HealthchecksSettings(_Section):
    """Dead man's switch pings, healthchecks.io style: <ping_url>/start, <ping_url> or
    <ping_url>/fail. The ping URL may come from RETRAINER_HEALTHCHECKS_PING_URL or the
    secrets file instead; with none, nothing is pinged."""

    ping_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    secrets_file: Path | None = None
    request_timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=3, ge=0, le=20)
    close_timeout_s: float = Field(default=15.0, gt=0)
    # The failure or success ping's body: the exit code, then the summary's last lines.
    body_lines: int = Field(default=30, gt=0, le=1000)


class PrometheusSettings(_Section):
    """Metrics after every run: a textfile for node_exporter's textfile collector, and/or
    a push to a Pushgateway. Basic auth for the Pushgateway, if any, comes from
    RETRAINER_PUSHGATEWAY_USERNAME / _PASSWORD or the secrets file."""

    textfile: Path | None = None
    pushgateway_url: str | None = Field(default=None, pattern=r"^https?://\S+$")
    job: str = Field(default="retrainer", min_length=1)
    # The Pushgateway grouping key's instance label (None: this machine's host name).
    instance: str | None = Field(default=None, min_length=1)
    secrets_file: Path | None = None
    request_timeout_s: float = Field(default=10.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=20)
    close_timeout_s: float = Field(default=15.0, gt=0)

    @field_validator("textfile")
    @classmethod
    def _textfile_is_read_by_node_exporter(cls, path: Path | None) -> Path | None:
        if path is not None and path.suffix != ".prom":
            raise ValueError("node_exporter's textfile collector reads only *.prom files")
        return path


class Settings(_Section):
    run: RunSettings = RunSettings()
    data: DataSettings = DataSettings()
    costs: CostSettings = CostSettings()
    trainer: TrainerSettings = TrainerSettings()
    storage: StorageSettings = StorageSettings()
    logging: LoggingSettings = LoggingSettings()
    notify: NotifySettings = NotifySettings()
    healthchecks: HealthchecksSettings = HealthchecksSettings()
    prometheus: PrometheusSettings = PrometheusSettings()
    ray: RaySettings = RaySettings()
    dask: DaskSettings = DaskSettings()
    promote: PromoteSettings = PromoteSettings()
    mlflow: MlflowSettings = MlflowSettings()
    batch: BatchSettings = BatchSettings()
    backtest: BacktestSettings = BacktestSettings()
    search: SearchSettings = SearchSettings()


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
    _check_folder("run.root", settings.run.root)
    return settings


def _check_folder(key: str, path: Path) -> None:
    """A folder we will create or write into must not be a file, nor lie under one: bad
    input (exit 2), named, rather than an I/O error of the run's files later."""
    for candidate in (path, *path.parents):
        try:
            if not candidate.exists():
                continue
        except OSError:  # unreadable: whoever writes there says why
            return
        if candidate.is_dir():
            return
        where = "is a file" if candidate == path else f"lies under the file {candidate}"
        raise BadInputError(f"{key} {path} {where}, not a folder")


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
    for section, key in PATH_LIST_KEYS:
        table = tree.get(section)
        if isinstance(table, dict) and isinstance(table.get(key), list):
            table[key] = [
                (base / Path(p).expanduser()).resolve() if isinstance(p, str | Path) else p
                for p in table[key]
            ]
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
            parts.append(f"{key}: {err['msg']} (got {_shown(err.get('input'))!r})")
    return "; ".join(parts)


def _shown(value: Any) -> Any:
    """A rejected value as an error may show it: values under secret-looking keys masked
    (a webhook header refused because it holds a secret)."""
    if isinstance(value, Mapping):
        return {k: MASK if is_secret_key(k) else _shown(v) for k, v in value.items()}
    return value
