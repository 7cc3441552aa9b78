"""The child's entry: one attempt of one symbol, in a process of its own.

It starts its own session (so the supervisor can kill its whole process group), becomes a
child subreaper (so whatever the trainer starts stays its descendant, even after a setsid
or a double fork), watches a lifeline to the scheduler (so neither it nor anything it
started outlives the scheduler), applies its thread budget, loads the
data, calls the trainer, and leaves a result file that the supervisor classifies. This
module is preloaded in the zygote together with torch, so an attempt starts by fork
in milliseconds instead of a fresh interpreter importing torch.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import structlog

from retrainer.base.artifacts import (
    CHAMPION_EVAL_FILE,
    FEATURES_FILE,
    atomic_write_json,
    sha256_bytes,
)
from retrainer.base.costs import SymbolCosts
from retrainer.base.logs import configure_worker_logging, redact_text
from retrainer.engine.attempt import (
    EXIT_FAILED,
    EXIT_RESULT_NOT_WRITTEN,
    AttemptResult,
    AttemptSpec,
)
from retrainer.engine.reaper import become_subreaper, kill_descendants
from retrainer.training.contract import (
    PARTIALS_MANIFEST,
    TrainContext,
    Trainer,
    load_trainer,
    read_partials,
)
from retrainer.training.forecasts import ForecastWindow

STACK_FRAMES_KEPT = 8
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)


def run_when_handed(inbox: Connection, lifeline: Connection) -> None:
    """The entry of a process forked ahead of need: it waits for the one
    attempt it will run, then runs it (one process per attempt, as ever; only the fork
    and the interpreter's start are paid while the slot's previous item still runs)."""
    # What does not depend on the attempt is done before it arrives.
    os.setsid()  # own session and process group: the supervisor kills the whole tree
    become_subreaper()
    _watch_lifeline(lifeline)
    signal.signal(signal.SIGTERM, _die_with_descendants)
    try:
        spec = inbox.recv()
    except (EOFError, OSError):  # not needed after all, or the scheduler is gone
        os._exit(0)
    inbox.close()
    run_attempt(spec)


def run_attempt(spec: AttemptSpec) -> None:
    """Exit 0 with an ok result, or exit 1 with an error result."""
    startup_ms = (time.time() - spec.submitted_at) * 1000.0
    os.environ.update(spec.environment)
    spec.log_dir.mkdir(parents=True, exist_ok=True)
    _redirect_output(spec.stdout_path)
    _limit_threads(spec.threads)
    configure_worker_logging(spec.engine_log, spec.log_dir / "worker.log", spec.log_level)
    structlog.contextvars.bind_contextvars(
        run_id=spec.run_id, symbol=spec.symbol, attempt=spec.attempt, pid=os.getpid()
    )
    log = structlog.get_logger()
    log.info(
        "worker_ready", startup_ms=round(startup_ms, 2), threads=spec.threads, device=spec.device
    )
    try:
        metrics = _train(spec, log)
    except BaseException as exc:  # everything, so the supervisor learns what happened
        _print_traceback(exc)
        _end_leftovers(log)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            _free_disk(spec.out_dir, log)
        _write_result(spec, _error_result(exc, startup_ms))
        log.error("worker_error", error_type=type(exc).__name__, error=_short(str(exc)))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_FAILED)
    _end_leftovers(log)
    _write_result(spec, AttemptResult.success(metrics, startup_ms))


def _free_disk(out_dir: Path, log: Any) -> None:
    """A full disk: the half-written outputs of this failed attempt must not keep it full
    for the other items. Saved partial outputs stay, for the retry to reuse."""
    keep = {PARTIALS_MANIFEST, *read_partials(out_dir).get("files", {})}
    freed = 0
    for path in list(out_dir.rglob("*")):
        if path.is_file() and path.relative_to(out_dir).as_posix() not in keep:
            with contextlib.suppress(OSError):
                size = path.stat().st_size
                path.unlink()
                freed += size
    log.warning("disk_full_outputs_removed", bytes=freed)


def _end_leftovers(log: Any) -> None:
    """The attempt is over: nothing the trainer started (a data loader, a helper it
    daemonised) may live on."""
    killed = kill_descendants()
    if killed:
        log.warning("leftover_processes_killed", pids=killed)


def _train(spec: AttemptSpec, log: Any) -> dict[str, Any]:
    trainer = load_trainer(spec.trainer)
    ctx = TrainContext(
        symbol=spec.symbol,
        data_source=lambda: _load_bars(spec),
        costs=SymbolCosts.from_dict(spec.costs),
        out_dir=spec.out_dir,
        seed=spec.seed,
        device=spec.device,
        threads=spec.threads,
        params=spec.params,
        partial_key_source=lambda: _partial_key(spec),
        reuse_dir=spec.reuse_dir,
        emit=lambda event, **fields: log.info(event, **fields),
        window=ForecastWindow.from_dict(spec.window) if spec.window is not None else None,
    )
    if spec.stage == "prepare":  # its partial outputs are all it leaves; no metrics
        trainer.prepare(ctx)  # type: ignore[attr-defined]
        return {"stage": "prepare"}
    returned = trainer(ctx)
    metrics = checked_metrics(returned)
    metrics_path = spec.out_dir / "metrics.json"
    if not metrics_path.exists():  # fsynced by the scheduler with the other artifacts
        atomic_write_json(metrics_path, metrics, durable=False)
    if spec.champion_dir is not None:
        evaluate_champion(trainer, spec.champion_dir, ctx, log)
    if not spec.keep_features:
        (spec.out_dir / FEATURES_FILE).unlink(missing_ok=True)
    return metrics


def evaluate_champion(trainer: Trainer, champion_dir: Path, ctx: TrainContext, log: Any) -> None:
    """The champion scored on this attempt's test span, for the gate: champion_eval.json.
    A trainer without the hook writes nothing (the gate compares reported metrics); one
    whose hook fails writes why, and never fails the attempt that trained."""
    hook = getattr(trainer, "evaluate", None)
    if hook is None:
        return
    path = ctx.out_dir / CHAMPION_EVAL_FILE
    started = time.perf_counter()
    try:
        scored = {
            "ok": True,
            "champion_dir": str(champion_dir),
            "metrics": checked_metrics(hook(champion_dir, ctx)),
        }
    except Exception as exc:  # the champion's problem (an old format...), not this attempt's
        scored = {
            "ok": False,
            "champion_dir": str(champion_dir),
            "error_type": type(exc).__name__,
            "error": _short(str(exc)),
        }
        log.warning("champion_eval_failed", error_type=type(exc).__name__, error=_short(str(exc)))
    else:
        log.info("champion_evaluated", seconds=round(time.perf_counter() - started, 3))
    atomic_write_json(path, scored, durable=False)


def _load_bars(spec: AttemptSpec) -> Any:
    # Imported here: pandas and pyarrow are in the zygote only for trainers that read
    # bars, and a zygote without them forks a few milliseconds faster.
    from retrainer.base.data import DataFormat, load_ohlcv

    fmt = DataFormat.from_dict(spec.data_format)
    key = _bars_key(spec.data_path, spec.min_rows, spec.data_format)
    cached = PRELOADED_BARS.get(key) if key is not None else None
    if cached is not None:  # read by the zygote before the fork (a backtest's windows)
        return cached.copy(deep=False)
    return load_ohlcv(spec.data_path, spec.min_rows, fmt)


# Bars the zygote read before forking (preload_bars): a backtest's windows of one symbol
# share them instead of each reading and validating the file again.
_BarsKey = tuple[str, int, int, int, str]
PRELOADED_BARS: dict[_BarsKey, Any] = {}


def _bars_key(path: Path, min_rows: int, data_format: dict[str, Any]) -> _BarsKey | None:
    """The file as it is now (size and mtime: a file replaced since is read again)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    fmt = json.dumps(data_format, sort_keys=True)
    return (str(path), stat.st_size, stat.st_mtime_ns, min_rows, fmt)


def preload_bars(paths: list[tuple[Path, int, dict[str, Any]]]) -> int:
    """Read these data files once, in the zygote: every attempt forked after shares them
    (copy-on-write). A file that cannot be read is left to the attempt, which says why."""
    from retrainer.base.data import DataFormat, load_ohlcv

    loaded = 0
    for path, min_rows, data_format in paths:
        key = _bars_key(path, min_rows, data_format)
        if key is None or key in PRELOADED_BARS:
            continue
        try:
            PRELOADED_BARS[key] = load_ohlcv(path, min_rows, DataFormat.from_dict(data_format))
        except Exception:  # noqa: BLE001 - the attempt reads it again and reports the error
            continue
        loaded += 1
    return loaded


def _partial_key(spec: AttemptSpec) -> str:
    """Partial outputs are reusable only for the same data, trainer and params."""
    from retrainer.base.data import data_fingerprint

    identity = json.dumps(
        {
            "data": data_fingerprint(spec.data_path),
            "trainer": spec.trainer,
            "params": spec.params,
            "seed": spec.seed,
        },
        sort_keys=True,
    )
    return sha256_bytes(identity.encode("utf-8"))


class GarbageResultError(TypeError):
    """The trainer returned something that is not a mapping of JSON-safe metrics."""


def checked_metrics(returned: object) -> dict[str, Any]:
    if not isinstance(returned, Mapping):
        raise GarbageResultError(
            f"trainer returned {type(returned).__name__}, expected a mapping of metrics"
        )
    metrics = {str(k): v for k, v in returned.items()}
    try:
        json.dumps(metrics, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise GarbageResultError(
            f"trainer returned metrics that are not JSON-safe: {exc}"
        ) from None
    return metrics


# I/O errors a person fixes on the machine, not in the code: say so first.
_IO_ERRNO_HINTS = {
    errno.ENOSPC: "disk full",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EIO: "I/O error",
}


def _error_result(exc: BaseException, startup_ms: float) -> AttemptResult:
    frames = traceback.extract_tb(exc.__traceback__)[-STACK_FRAMES_KEPT:]
    message = str(exc)
    code = exc.errno if isinstance(exc, OSError) else None
    if code in _IO_ERRNO_HINTS:
        message = f"{_IO_ERRNO_HINTS[code]} ({errno.errorcode[code]}): {exc}"
    return AttemptResult(
        ok=False,
        error_type=type(exc).__name__,
        message=_short(message),
        stack=tuple(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames),
        startup_ms=startup_ms,
    )


def _print_traceback(exc: BaseException) -> None:
    """The whole traceback, chained causes included, to the attempt's log (our stderr);
    the result, and so the ledger, keeps the last STACK_FRAMES_KEPT frames."""
    with contextlib.suppress(Exception):  # a log that cannot be written loses only this
        text = "".join(traceback.format_exception(exc))
        sys.stderr.write(redact_text(text))
        sys.stderr.flush()


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _write_result(spec: AttemptSpec, result: AttemptResult) -> None:
    result = replace(result, peak_rss_mb=peak_rss_mb(), gpu_peak_mb=gpu_peak_mb(spec.device))
    try:  # read by the supervisor as soon as we exit: no need to survive a power cut
        atomic_write_json(spec.result_path, result.to_dict(), durable=False)
    except OSError:  # a full or read-only run folder: the exit code is all we can leave
        os._exit(EXIT_RESULT_NOT_WRITTEN)


def peak_rss_mb() -> float:
    """This process's RSS high-water mark, or that of the largest child it reaped, the
    larger (getrusage ru_maxrss: kept by the kernel, so a peak between the supervisor's
    samples is not missed; free to read). A forked process starts at its parent's RSS
    at the fork, counted as the supervisor's samples count it (shared pages included)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    unit = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return max(own, children) * unit / 2**20


def gpu_peak_mb(device: str) -> float | None:
    """torch.cuda.max_memory_allocated on the attempt's device, if torch is imported and
    CUDA was initialised in this process: never initialised just to ask."""
    torch = sys.modules.get("torch")
    if torch is None or not device.startswith("cuda"):
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        return float(torch.cuda.max_memory_allocated(torch.device(device))) / 2**20
    except Exception:  # a broken CUDA state: the peak is a hint, the result is what counts
        return None


def _die_with_descendants(signum: int, _frame: object) -> None:
    """SIGTERM without a handler of the trainer's: die as SIGTERM makes a process die, and
    take every descendant along. Whoever sends it (our supervisor, or an engine's worker
    that ends and signals what it started, as Ray's does) does not always reach a
    descendant that left our group; as their subreaper we can."""
    kill_descendants()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGTERM)


def _watch_lifeline(lifeline: Connection) -> None:
    """When the scheduler dies its end of the pipe closes: take our whole group down."""

    def watch() -> None:
        try:
            lifeline.recv_bytes()
        except (EOFError, OSError):
            pass
        kill_descendants()  # those that left our group too: we are their subreaper
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="lifeline", daemon=True).start()


def _redirect_output(path: Path) -> None:
    """The trainer's prints and C-level output go to the attempt's log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def _limit_threads(threads: int) -> None:
    budget = str(threads)
    for name in THREAD_ENV_VARS:  # for anything the trainer starts; the zygote has the
        if os.environ.get(name) != budget:  # driver's likely budget set already
            os.environ[name] = budget
    # Deterministic cuBLAS must be asked for before CUDA is first touched in this process.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch = sys.modules.get("torch")  # preloaded if the trainer needs it; else it reads
    if torch is not None:  # the variables above when it imports torch itself
        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:
            pass  # already fixed for this process; intra-op threads are what matter
    # Only pools of another size: setting OpenBLAS's rebuilds its pool at once, and a new
    # pool's threads busy-wait for their first work (a share of a core each) even in an
    # item that never calls BLAS. One of the zygote's size is built on first use.
    for pool in blas_threadpools().lib_controllers:
        if pool.num_threads != threads:
            pool.set_num_threads(threads)


_THREADPOOLS: Any = None


def blas_threadpools() -> Any:
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries. Building it scans every
    loaded library, so the zygote builds it once for all its forks."""
    global _THREADPOOLS
    if _THREADPOOLS is None:
        from threadpoolctl import ThreadpoolController

        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS
