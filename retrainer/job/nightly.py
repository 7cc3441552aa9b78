"""The nightly job: plan, lock, execute, record, report. The CLI's `run` calls this."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import structlog
from rich.console import Console

from retrainer.base.artifacts import (
    MANIFEST_NAME,
    Layout,
    artifact_files,
    atomic_write_json,
    attempt_stamp,
    iso,
    now_utc,
)
from retrainer.base.config import Settings
from retrainer.base.exitcodes import ExitCode
from retrainer.base.lock import RunLock
from retrainer.base.logs import COIN_SKIPPED, JOB_COMPLETED, JOB_STARTED, configure_logging
from retrainer.base.resources import detect_resources
from retrainer.engine.drivers import Driver, make_driver
from retrainer.engine.loop import Runner, StopFlag
from retrainer.engine.reaper import become_subreaper
from retrainer.job.summary import build_summary
from retrainer.ledger.entries import FAILED_STATES, ItemState, UploadState
from retrainer.ledger.fsync import Syncer
from retrainer.ledger.journal import Ledger
from retrainer.mirror.storage.base import make_storage
from retrainer.mirror.sync import finish_run_uploads, mark_pending, sync_before_run
from retrainer.mirror.uploads import Uploader
from retrainer.notify import notifier_for_run
from retrainer.plan.planner import Plan, build_plan, likely_threads_per_item
from retrainer.training.contract import load_trainer
from retrainer.views.display import print_plan, print_result
from retrainer.views.progress import live_progress


def run_job(settings: Settings, *, force: bool, dry_run: bool, console: Console) -> ExitCode:
    now = now_utc()
    if dry_run:  # reads only; writes nothing under the root
        print_plan(build_plan(settings, detect_resources(), now, force), console, dry_run=True)
        return ExitCode.OK
    run_id = f"{attempt_stamp(now)}-{os.getpid()}"
    root = settings.run.root.resolve()
    with RunLock(Layout(root).lock_path(), run_id):
        become_subreaper()  # what an item leaves behind when it dies is ours to kill
        driver = make_driver(settings.run.driver, _preload(settings),
                             likely_threads_per_item(settings))
        driver.start()  # the zygote imports torch while the plan reads the data
        try:
            plan = build_plan(settings, detect_resources(), now, force)
            return _execute(settings, plan, driver, run_id, force, console)
        finally:
            driver.close()


# For a trainer that does not say what it needs: what a typical trainer imports.
DEFAULT_PRELOAD = ("torch", "pandas", "pyarrow.parquet")


def _preload(settings: Settings) -> list[str]:
    """The trainer's module and the heavy modules it declares, imported once in the
    zygote; torch too if importing the trainer pulled it in."""
    trainer = load_trainer(settings.trainer.plugin)
    module = settings.trainer.plugin.partition(":")[0]
    heavy = list(getattr(trainer, "preload_modules", DEFAULT_PRELOAD))
    if "torch" in sys.modules:
        heavy.append("torch")
    return [module, *heavy]


def _execute(settings: Settings, plan: Plan, driver: Driver, run_id: str, force: bool,
             console: Console) -> ExitCode:
    started, started_at = time.monotonic(), iso(now_utc())
    layout, day = plan.layout, plan.day
    configure_logging(layout.engine_log(day), settings.logging.level)
    structlog.contextvars.bind_contextvars(run_id=run_id)
    log = structlog.get_logger()
    storage = make_storage(settings.storage)
    if storage:  # what earlier runs left pending goes up first; then today's may be pending
        sync_before_run(layout.root, storage)
        mark_pending(layout, day)
    costs_path = layout.costs_path(day)
    atomic_write_json(costs_path, _merged_costs(costs_path, plan))
    syncer = Syncer()
    ledger = Ledger(layout.status_path(day), layout.journal_path(day), syncer=syncer)
    recovered = _record_settled(plan, ledger, storage is not None)
    run: dict[str, Any] = {
        "run_id": run_id, "pid": os.getpid(), "host": socket.gethostname(),
        "started_at": started_at, "mode": plan.mode.value, "driver": settings.run.driver,
        "max_concurrent": plan.max_concurrent, "window": plan.window,
        "threads_per_item": plan.threads_per_item, "force": force,
        "resources": plan.resources.to_dict(), "trainer": settings.trainer.plugin,
        "symbols": len(plan.items), "to_run": len(plan.to_run), "to_skip": len(plan.to_skip),
        "retries": settings.run.retries,
    }
    ledger.record_run(run)
    log.info(JOB_STARTED, **{k: v for k, v in run.items() if k != "run_id"})
    for item in plan.to_skip:
        log.info(COIN_SKIPPED, symbol=item.symbol, why=item.why)
    uploader = Uploader(storage, layout, settings.storage.upload_workers) if storage else None
    for folder, symbol in recovered:  # finished before the scheduler died: never uploaded
        if uploader:
            uploader.submit([*artifact_files(folder), folder / MANIFEST_NAME], symbol)
    notifier = notifier_for_run(settings.notify)
    notifier.run_started(run)
    stop = StopFlag()
    with _signals_set(stop), live_progress(ledger, run, day, console, layout.engine_log(day),
                                           settings.logging.level):
        tally = Runner(settings, plan, ledger, driver, uploader, run_id, stop, syncer,
                       on_final_failure=notifier.item_failed).execute()
    wall_s = time.monotonic() - started
    summary = build_summary(plan, ledger.entries, tally.attempts, run, wall_s)
    exit_code = _exit_code(summary, stop)
    summary.update(finished_at=iso(now_utc()), exit_code=int(exit_code),
                   worker_startup_ms=_startup_stats(tally.startup_ms))
    summary_path = layout.summary_path(day)
    atomic_write_json(summary_path, summary)
    ledger.record_run({**run, "finished_at": summary["finished_at"], "exit_code": int(exit_code)})
    ledger.close()
    syncer.close()
    notifier.run_finished(summary)  # sent from its own thread while the uploads drain
    if uploader:
        uploader.submit([costs_path, layout.status_path(day), summary_path])
        finish_run_uploads(layout, day, uploader.drain())
        uploader.close()
    log.info(JOB_COMPLETED, exit_code=int(exit_code), wall_minutes=summary["total_wall_minutes"],
             succeeded=summary["succeeded"], failed=summary["failed"],
             skipped=summary["skipped"], interrupted=summary["interrupted"])
    print_result(summary, summary_path, console)
    notifier.close()  # waits at most [notify] close_timeout_s
    return exit_code


def _record_settled(plan: Plan, ledger: Ledger, has_storage: bool) -> list[tuple[Path, str]]:
    """Record what a scheduler that died left running, as it really ended; return the
    folders of those that had finished, whose upload never happened."""
    recovered = []
    for item in plan.items:
        entry = item.previous
        if not item.settled or entry is None:
            continue
        if entry.state is ItemState.SUCCESS and entry.artifact_dir:
            recovered.append((plan.layout.root / entry.artifact_dir, item.symbol))
            entry = replace(entry, upload=UploadState.PENDING if has_storage
                            else UploadState.NONE)
        ledger.record(entry)
    return recovered


def _exit_code(summary: dict[str, Any], stop: StopFlag) -> ExitCode:
    if stop.requested:
        return ExitCode.INTERRUPTED
    failed = {s.value for s in FAILED_STATES}
    if any(s["status"] in failed for s in summary["by_symbol"].values()):
        return ExitCode.SOME_FAILED
    return ExitCode.OK


def _merged_costs(path: Path, plan: Plan) -> dict[str, Any]:
    """costs.json keeps every symbol costed today; this run's figures win."""
    try:
        existing = json.loads(path.read_text("utf-8")).get("symbols", {})
    except (OSError, ValueError, AttributeError):
        existing = {}
    symbols = {**existing, **{i.symbol: i.costs.to_dict() for i in plan.items}}
    return {"day": plan.day, "updated_at": iso(now_utc()), "symbols": symbols}


def _startup_stats(samples: list[float]) -> dict[str, float] | None:
    if not samples:
        return None
    ordered = sorted(samples)
    return {"median": round(ordered[len(ordered) // 2], 2), "max": round(ordered[-1], 2),
            "n": len(ordered)}


@contextlib.contextmanager
def _signals_set(stop: StopFlag) -> Iterator[None]:
    """SIGINT/SIGTERM only set the flag; the loop stops gracefully, a second one at once."""
    previous = {sig: signal.signal(sig, stop.request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
