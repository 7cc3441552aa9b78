"""One invocation of `retrainer run`, and the record it leaves when its night does not
record its own end.

A night that has started records itself (nightly.py): its run in the ledger,
engine_summary.json, the finished message. An invocation that stops before that (the
trainer cannot be imported, the lock is held, the plan finds bad input, an internal or I/O
error, SIGINT/SIGTERM while it plans), or whose night could not finish its own record,
still leaves a trace of that night:

- runs/<day>/invocations/<run_id>.json (retrainer.ledger.invocations), which `status` and
  `history` read beside the ledger;
- summary/<day>/engine_summary.json with `"started": false`, the exit code, the stage it
  reached and the reason. An earlier run's full summary of the same day is first kept,
  byte for byte, as engine_summary.<its run_id>.json, named in `previous_summary`. An
  invocation refused by the lock writes a summary only on a day that has none: the run
  holding the lock owns the day's summary;
- the finished message to the run's observers (retrainer.notify).

Each step is attempted whatever became of the others, and none raises: the exit code and
the message on stderr stay the caller's.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from retrainer.base.artifacts import Layout, atomic_write_bytes, atomic_write_json
from retrainer.base.clock import attempt_stamp, iso, now_utc, run_day
from retrainer.base.config import Settings
from retrainer.base.errors import BadInputError, LockedError
from retrainer.base.exitcodes import ExitCode
from retrainer.base.logs import JOB_COMPLETED, JOB_NOT_STARTED
from retrainer.ledger.invocations import write_invocation
from retrainer.notify.protocol import Notifier

# How far an invocation got, in order; the record names the last one reached.
STAGES = ("trainer", "lock", "driver", "plan", "open", "run", "close")


@dataclass
class Invocation:
    """Who runs tonight's night and since when: known before anything can fail."""

    settings: Settings
    run_id: str
    day: str
    started_at: str
    force: bool
    stage: str = STAGES[0]
    # Where its record goes: the nights' layout, or a backtest's own (BacktestLayout).
    own_layout: Layout | None = None

    @classmethod
    def begin(
        cls, settings: Settings, now: datetime, force: bool, layout: Layout | None = None
    ) -> Invocation:
        run_id = f"{attempt_stamp(now)}-{os.getpid()}"
        return cls(settings, run_id, run_day(now), iso(now), force, own_layout=layout)

    @property
    def layout(self) -> Layout:
        return self.own_layout or Layout(self.settings.run.root.resolve())


def exit_code_for(exc: BaseException) -> ExitCode:
    """The code a run that raised ends with: the CLI maps the same exceptions."""
    if isinstance(exc, BadInputError):
        return ExitCode.BAD_INPUT
    if isinstance(exc, LockedError):
        return ExitCode.LOCKED
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, OSError):
        return ExitCode.IO_ERROR
    return ExitCode.INTERNAL_ERROR


def stop_signal_name(exc: KeyboardInterrupt) -> str:
    """SIGINT raises a bare KeyboardInterrupt; nightly's SIGTERM handler names itself."""
    return str(exc.args[0]) if exc.args else "SIGINT"


def reason_for(exc: BaseException) -> str:
    if isinstance(exc, BadInputError | LockedError):
        return str(exc)
    if isinstance(exc, KeyboardInterrupt):
        return f"stopped by {stop_signal_name(exc)}"
    if isinstance(exc, OSError):
        return f"cannot write the run's files ({exc})"
    return f"internal error: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class NightRecord:
    """What the night itself recorded before the invocation ended."""

    started: bool = False  # its run is in the day's ledger
    summary: Mapping[str, Any] | None = None  # the engine_summary.json it wrote
    notified: bool = False  # its observers were told how it finished


def record_unfinished(
    invocation: Invocation, exc: BaseException, night: NightRecord, notifier: Notifier
) -> None:
    """Leave the record of an invocation that raised, unless its night left a true one."""
    code = exit_code_for(exc)
    if night.summary is not None and night.summary.get("exit_code") == code and night.notified:
        return  # the loop broke and the night's close said so: nothing is missing
    log = structlog.get_logger()
    layout, day = invocation.layout, invocation.day
    record = _record(invocation, code, reason_for(exc), night.started)
    log.error(
        JOB_NOT_STARTED if not night.started else JOB_COMPLETED,
        **{k: record[k] for k in ("exit_code", "stage", "reason")},
    )
    try:
        write_invocation(layout, day, record)
    except OSError as error:
        log.warning("record_failed", what="invocation", reason=str(error))
    summary = _summary(invocation, record, night.summary)
    try:
        _write_summary(layout, day, summary, refused_by_lock=code is ExitCode.LOCKED)
    except OSError as error:
        log.warning("record_failed", what="summary", reason=str(error))
    if not night.notified:
        notifier.run_finished(summary)  # a notifier never raises


def _record(invocation: Invocation, code: ExitCode, reason: str, started: bool) -> dict[str, Any]:
    settings = invocation.settings
    return {
        "run_id": invocation.run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started_at": invocation.started_at,
        "finished_at": iso(now_utc()),
        "started": started,
        "stage": invocation.stage,
        "exit_code": int(code),
        "reason": reason,
        "force": invocation.force,
        "driver": settings.run.driver,
        "trainer": settings.trainer.plugin,
        "symbols_spec": settings.run.symbols,
    }


def _summary(
    invocation: Invocation, record: Mapping[str, Any], written: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The night's own summary with the true end, or a small one with the same keys."""
    end = {k: record[k] for k in ("finished_at", "exit_code", "reason", "stage")}
    if written is not None and written.get("run_id") == invocation.run_id:
        return {**written, **end}
    wall_s = (
        datetime.fromisoformat(str(record["finished_at"]))
        - datetime.fromisoformat(invocation.started_at)
    ).total_seconds()
    return {
        **record,
        "day": invocation.day,
        "total_symbols": 0,
        "succeeded": 0,
        "failed": 0,
        "timed_out": 0,
        "interrupted": 0,
        "not_started": 0,
        "skipped": 0,
        "avg_train_minutes": None,
        "median_train_minutes": None,
        "total_wall_minutes": round(max(0.0, wall_s) / 60.0, 4),
        "failures": {},
        "by_symbol": {},
        "previous_summary": None,
    }


def _write_summary(
    layout: Layout, day: str, summary: dict[str, Any], refused_by_lock: bool
) -> None:
    path = layout.summary_path(day)
    try:
        raw: bytes | None = path.read_bytes()
    except FileNotFoundError:
        raw = None
    if raw is not None and refused_by_lock:
        return  # the day's summary belongs to the run that holds the lock
    existing = _parse(raw)
    if existing is not None and existing.get("run_id") != summary["run_id"]:
        if existing.get("started") is False:  # another failed invocation: keep its pointer
            summary["previous_summary"] = existing.get("previous_summary")
        elif raw is not None:
            kept = path.with_name(f"engine_summary.{existing.get('run_id', 'earlier')}.json")
            if not kept.exists():
                atomic_write_bytes(kept, raw)
            summary["previous_summary"] = layout.relative(kept)
    atomic_write_json(path, summary)


def _parse(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        loaded = json.loads(raw)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None
