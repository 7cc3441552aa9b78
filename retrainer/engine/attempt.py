"""The attempt contract: what the head hands the process that runs one attempt (an
AttemptSpec), what that process leaves behind (an AttemptResult), and its exit codes.

Both sides import this module and nothing else of each other: the worker writes the
result, the supervisor reads and classifies it, on whichever machine the attempt ran.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

# The child's exit codes. EX_CANTCREAT (sysexits.h): the attempt ended but its result
# file could not be written.
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_RESULT_NOT_WRITTEN = 73

# "full": one stage, the trainer does it all; two stages: "prepare" (the trainer's
# `prepare(ctx)`, on a CPU slot), then "train" (the trainer, reusing what prepare saved).
Stage = Literal["full", "prepare", "train"]


@dataclass(frozen=True)
class AttemptSpec:
    """Everything a child needs for one attempt; pickled to it over its inbox."""

    run_id: str
    symbol: str
    attempt: int
    data_path: Path
    min_rows: int
    costs: dict[str, Any]
    out_dir: Path
    log_dir: Path
    engine_log: Path
    trainer: str
    params: dict[str, Any]
    seed: int
    device: str
    threads: int
    log_level: str = "info"
    reuse_dir: Path | None = None
    submitted_at: float = field(default_factory=time.time)
    # The ledger's key for the item: the symbol for a nightly item.
    item_id: str = ""
    # Set in the attempt's process before anything else: e.g. CUDA_VISIBLE_DEVICES for the
    # GPU a remote engine assigned (the zygote that forks it may hold an older value).
    environment: dict[str, str] = field(default_factory=dict)
    # How the data file names its columns and stores its times (base.data.DataFormat).
    data_format: dict[str, Any] = field(default_factory=dict)
    # The symbol's champion folder: after a success, a trainer with an `evaluate` hook
    # scores it on this attempt's test span (champion_eval.json) for the promotion gate.
    champion_dir: Path | None = None
    # False: features.parquet is removed once the attempt succeeds ([run] keep_features).
    keep_features: bool = True
    # "full": the trainer does it all (one stage); "prepare": only `trainer.prepare(ctx)`
    # (two stages, the CPU stage); "train": the trainer, reusing the prepare's partials.
    stage: Stage = "full"
    # A backtest's walk-forward window (training.forecasts.ForecastWindow as a dict): the
    # trainer fits on its training bars and forecasts the rest. None: a nightly item.
    window: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.item_id:
            object.__setattr__(self, "item_id", self.symbol)

    @property
    def stdout_path(self) -> Path:
        return self.log_dir / f"attempt-{self.attempt}.log"

    @property
    def result_path(self) -> Path:
        return self.log_dir / f"attempt-{self.attempt}.result.json"


@dataclass(frozen=True)
class AttemptResult:
    """What the attempt's process says of itself before it exits: its metrics, or the
    error that ended it (type, short message, the last frames)."""

    ok: bool
    metrics: dict[str, Any] | None = None
    error_type: str | None = None
    message: str = ""
    stack: tuple[str, ...] = ()
    startup_ms: float | None = None
    # The process's own memory high-water mark (getrusage ru_maxrss of itself and of the
    # children it reaped, the larger) and torch.cuda.max_memory_allocated on its device
    # when torch had CUDA initialised: measured by the process, so no short peak is missed.
    peak_rss_mb: float | None = None
    gpu_peak_mb: float | None = None

    @classmethod
    def success(cls, metrics: dict[str, Any], startup_ms: float | None) -> AttemptResult:
        return cls(ok=True, metrics=metrics, startup_ms=startup_ms)

    @property
    def reason(self) -> str:
        return f"{self.error_type or 'Error'}: {self.message}".rstrip(": ")

    def to_dict(self) -> dict[str, Any]:
        raw: dict[str, Any] = {"ok": self.ok, "startup_ms": self.startup_ms}
        for key in ("peak_rss_mb", "gpu_peak_mb"):
            if getattr(self, key) is not None:
                raw[key] = getattr(self, key)
        if self.ok:
            raw["metrics"] = self.metrics
        else:
            raw.update(
                error_type=self.error_type or "Error", message=self.message, stack=list(self.stack)
            )
        return raw

    @classmethod
    def from_dict(cls, raw: object) -> AttemptResult | None:
        """None for anything that is not a result (a torn or foreign file)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("ok"), bool):
            return None
        startup_ms = _number(raw.get("startup_ms"))
        peak_rss_mb, gpu_peak_mb = _number(raw.get("peak_rss_mb")), _number(raw.get("gpu_peak_mb"))
        if raw["ok"]:
            metrics = raw.get("metrics")
            return cls(
                ok=True,
                metrics=metrics if isinstance(metrics, dict) else {},
                startup_ms=startup_ms,
                peak_rss_mb=peak_rss_mb,
                gpu_peak_mb=gpu_peak_mb,
            )
        return cls(
            ok=False,
            error_type=str(raw.get("error_type") or "Error"),
            message=str(raw.get("message", "")),
            stack=tuple(str(s) for s in raw.get("stack", ())),
            startup_ms=startup_ms,
            peak_rss_mb=peak_rss_mb,
            gpu_peak_mb=gpu_peak_mb,
        )

    @classmethod
    def read(cls, path: Path) -> AttemptResult | None:
        try:
            return cls.from_dict(json.loads(path.read_text("utf-8")))
        except (OSError, ValueError):
            return None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
