"""What any trainer plug-in receives and returns.

A trainer is a function named in the config as "package.module:function":

    def train(ctx: TrainContext) -> Mapping[str, Any]: ...

It runs inside the item's own child process. It receives the symbol, its validated OHLCV
data (`ctx.data`, read from its file on first use: a trainer that never looks at it does not
pay for it), its costs, an empty output folder, a seed, a device ("cpu" or "cuda:N") and its thread
budget (already applied to torch and BLAS), and returns its metrics as a JSON-serialisable
mapping. It writes its artifacts into `ctx.out_dir`; partial outputs go through
`ctx.save_partial` so that a retry can reuse them (`ctx.reuse_partial`) once they verify.
The worker writes metrics.json from the returned mapping if the trainer did not, and the
scheduler then hashes every artifact into sha256.txt.

A trainer may carry a `params_model` attribute (a pydantic model class): the scheduler then
validates `[trainer.params]` against it before anything starts. It may carry
`preload_modules`, the heavy modules it needs (e.g. ("torch",)): they are imported once in
the zygote that forks every attempt. Without it, torch, pandas and pyarrow are. It may
carry `warm_up`, a function the zygote calls once after those imports (a tiny fit on
synthetic bars, training/warm.py), so that every attempt starts with its libraries'
first-call work done: what a backtest's many short windows would each pay again.

A trainer may split its work in two stages with a `prepare` attribute,
`prepare(ctx) -> None`: it builds what needs only the CPU (features, splits) and saves it
through `ctx.save_partial`. With two stages on ([run] two_stage), an item's prepare runs
in an attempt of its own on a CPU slot, and its train stage is an attempt whose
`ctx.reuse_dir` is the prepare attempt's folder: `train(ctx)` reuses what verifies
(`ctx.reuse_partial`) and builds the rest. With one stage, `train(ctx)` does it all.

In a backtest (`retrainer backtest`) `ctx.window` is one walk-forward window
(training/forecasts.py): the trainer fits on the window's training bars only and writes its
out-of-sample forecasts with `ctx.write_forecasts(frame)`. A trainer that can do this
carries a `score_forecasts(frame, costs) -> metrics` attribute: the head scores a symbol's
concatenated forecasts with it (the walk-forward metrics). In a nightly run `ctx.window` is
None.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from retrainer.base.artifacts import (
    atomic_write_bytes,
    atomic_write_json,
    sha256_bytes,
    sha256_file,
)
from retrainer.base.costs import SymbolCosts
from retrainer.base.errors import BadInputError
from retrainer.training.forecasts import (
    FORECASTS_FILE,
    ForecastWindow,
    checked_forecasts,
    forecasts_to_parquet,
)

if TYPE_CHECKING:
    import pandas as pd

PARTIALS_MANIFEST = ".partials.json"


class Trainer(Protocol):
    def __call__(self, ctx: TrainContext) -> Mapping[str, Any]: ...


EventSink = Callable[..., None]


def has_prepare(trainer: object) -> bool:
    """Whether the trainer declares a `prepare(ctx)` stage (two stages are possible)."""
    return callable(getattr(trainer, "prepare", None))


def _no_events(event: str, **fields: Any) -> None:
    return None


@dataclass(frozen=True)
class TrainContext:
    symbol: str
    data_source: Callable[[], pd.DataFrame]  # reads the validated bars; see `data`
    costs: SymbolCosts
    out_dir: Path
    seed: int
    device: str
    threads: int
    params: Mapping[str, Any] = field(default_factory=dict)
    # Identifies the inputs of partial outputs (data fingerprint, params): a partial is
    # reused only from an attempt with the same key. Computed when first needed.
    partial_key_source: Callable[[], str] = str
    reuse_dir: Path | None = None
    emit: EventSink = _no_events
    # A backtest's walk-forward window (fit on its training bars, forecast the rest); None:
    # a nightly item.
    window: ForecastWindow | None = None

    @cached_property
    def data(self) -> pd.DataFrame:
        """The symbol's bars, loaded on first use."""
        return self.data_source()

    @cached_property
    def partial_key(self) -> str:
        return self.partial_key_source()

    def write_forecasts(self, frame: pd.DataFrame) -> Path:
        """Write the window's out-of-sample forecasts (forecasts.FORECAST_COLUMNS), checked:
        every row inside the window's forecast span, every fit ending before its time."""
        if self.window is None:
            raise RuntimeError("write_forecasts needs a backtest window (ctx.window)")
        rows = checked_forecasts(frame, self.window, self.symbol)
        path = self.out_dir / FORECASTS_FILE
        atomic_write_bytes(path, forecasts_to_parquet(rows), durable=False)
        self.emit("forecasts_written", rows=len(rows), window=self.window.name)
        return path

    def save_partial(self, name: str, data: bytes) -> Path:
        """Write a partial output atomically and record its sha256 for a later retry."""
        path = self.out_dir / name
        atomic_write_bytes(path, data)
        self._record_partial(name, sha256_bytes(data))
        self.emit("coin_partial_saved", artifact=name, bytes=len(data))
        return path

    def reuse_partial(self, name: str) -> Path | None:
        """A verified copy of a previous attempt's partial output, or None."""
        if self.reuse_dir is None:
            return None
        recorded = read_partials(self.reuse_dir)
        source = self.reuse_dir / name
        digest = recorded.get("files", {}).get(name)
        if recorded.get("key") != self.partial_key or digest is None or not source.is_file():
            return None
        if sha256_file(source) != digest:
            return None
        target = self.out_dir / name
        shutil.copyfile(source, target)
        self._record_partial(name, digest)
        self.emit("coin_partial_reused", artifact=name, source=str(source))
        return target

    def _record_partial(self, name: str, digest: str) -> None:
        recorded = read_partials(self.out_dir)
        files = dict(recorded.get("files", {}))
        files[name] = digest
        manifest = {"key": self.partial_key, "files": files}
        atomic_write_json(self.out_dir / PARTIALS_MANIFEST, manifest)


def read_partials(folder: Path) -> dict[str, Any]:
    try:
        loaded = json.loads((folder / PARTIALS_MANIFEST).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def add_plugin_paths(paths: Sequence[Path]) -> None:
    """Put `[trainer] paths` first on sys.path, in their order, as PYTHONPATH would: the
    zygote takes the scheduler's sys.path, so every attempt's process finds them too."""
    for path in paths:
        if not path.is_dir():
            raise BadInputError(f"trainer.paths: {path} is not a folder")
    for path in reversed(paths):
        if str(path) in sys.path:
            sys.path.remove(str(path))
        sys.path.insert(0, str(path))
    importlib.invalidate_caches()


def load_trainer(spec: str, paths: Sequence[Path] = ()) -> Trainer:
    """Resolve "package.module:function", searching `paths` first (`[trainer] paths`);
    a bad spec is bad input (exit 2)."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise BadInputError(f'trainer.plugin {spec!r}: expected "package.module:function"')
    add_plugin_paths(paths)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error in a plug-in's import is the plug-in's, not ours
        hint = ""
        if isinstance(exc, ModuleNotFoundError) and exc.name == module_name.split(".")[0]:
            hint = (
                "; a plug-in that is not installed needs its folder in the config: "
                '[trainer] paths = ["folder"] (relative to the config file)'
            )
        raise BadInputError(
            f"trainer.plugin {spec!r}: cannot import {module_name} "
            f"({type(exc).__name__}: {exc}){hint}"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise BadInputError(f"trainer.plugin {spec!r}: {module_name} has no function {attr}")
    return fn  # type: ignore[no-any-return]


def validate_trainer_params(trainer: Trainer, params: Mapping[str, Any]) -> dict[str, Any]:
    """Check [trainer.params] against the trainer's own model, if it declares one."""
    model = getattr(trainer, "params_model", None)
    if model is None:
        return dict(params)
    from pydantic import ValidationError

    from retrainer.base.config import describe_validation_error

    try:
        return dict(model.model_validate(dict(params)).model_dump(mode="json"))
    except ValidationError as exc:
        raise BadInputError("trainer.params: " + describe_validation_error(exc)) from None
