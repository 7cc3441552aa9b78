"""The night's lifetime: plan, lock, then open / run / close.

open   logging, pending uploads of earlier runs, costs.json, the ledger and its fsync
       thread, the listeners (uploads, notifications), the run's record
run    the engine's loop over the plan's items
close  the summary, the run's finish in the ledger, the last uploads, the notification

Everything opened is closed through one ExitStack, and the summary is still attempted when
the loop raises. What is shown to a person goes through a NightReporter (the CLI's console);
this module prints nothing itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import structlog

from retrainer.base.artifacts import MANIFEST_NAME, Layout, artifact_files, atomic_write_json
from retrainer.base.clock import attempt_stamp, iso, now_utc
from retrainer.base.config import Settings
from retrainer.base.exitcodes import ExitCode
from retrainer.base.lock import RunLock
from retrainer.base.logs import COIN_SKIPPED, JOB_COMPLETED, JOB_STARTED, configure_logging
from retrainer.base.resources import detect_resources
from retrainer.engine.drivers import make_driver
from retrainer.engine.drivers.protocol import Driver
from retrainer.engine.events import ItemListener
from retrainer.engine.loop import Engine, RunTally, StopFlag
from retrainer.engine.reaper import become_subreaper
from retrainer.job.listeners import NotifyListener, UploadListener
from retrainer.job.summary import build_summary
from retrainer.ledger.entries import FAILED_STATES, ItemState, UploadState
from retrainer.ledger.fsync import Syncer
from retrainer.ledger.journal import Ledger
from retrainer.mirror.storage.registry import make_storage
from retrainer.mirror.sync import finish_run_uploads, mark_pending, sync_before_run
from retrainer.mirror.uploads import Uploader
from retrainer.notify.registry import observers_for_run
from retrainer.plan.planner import Plan, build_plan
from retrainer.plan.policy import likely_threads_per_item
from retrainer.training.contract import Trainer, load_trainer


class NightReporter(Protocol):
    """What a person sees of a night: the plan, live progress, the result."""

    def plan(self, plan: Plan, dry_run: bool) -> None: ...

    def progress(
        self, ledger: Ledger, run: Mapping[str, Any], day: str, engine_log: Path, log_level: str
    ) -> AbstractContextManager[None]: ...

    def result(self, summary: dict[str, Any], summary_path: Path) -> None: ...


def run_night(
    settings: Settings, *, force: bool, dry_run: bool, reporter: NightReporter
) -> ExitCode:
    now = now_utc()
    trainer = load_trainer(settings.trainer.plugin)
    if dry_run:  # reads only; writes nothing under the root
        reporter.plan(build_plan(settings, trainer, detect_resources(), now, force), True)
        return ExitCode.OK
    run_id = f"{attempt_stamp(now)}-{os.getpid()}"
    root = settings.run.root.resolve()
    with RunLock(Layout(root).lock_path(), run_id):
        become_subreaper()  # what an item leaves behind when it dies is ours to kill
        driver = make_driver(
            settings.run.driver, _preload(settings, trainer), likely_threads_per_item(settings)
        )
        driver.start()  # the zygote imports torch while the plan reads the data
        try:
            plan = build_plan(settings, trainer, detect_resources(), now, force)
            return Night(settings, plan, driver, run_id, force, reporter).run()
        finally:
            driver.close()


# For a trainer that does not say what it needs: what a typical trainer imports.
DEFAULT_PRELOAD = ("torch", "pandas", "pyarrow.parquet")


def _preload(settings: Settings, trainer: Trainer) -> list[str]:
    """The trainer's module and the heavy modules it declares, imported once in the
    zygote; torch too if importing the trainer pulled it in."""
    module = settings.trainer.plugin.partition(":")[0]
    heavy = list(getattr(trainer, "preload_modules", DEFAULT_PRELOAD))
    if "torch" in sys.modules:
        heavy.append("torch")
    return [module, *heavy]


class Night:
    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        driver: Driver,
        run_id: str,
        force: bool,
        reporter: NightReporter,
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.driver = driver
        self.run_id = run_id
        self.force = force
        self.reporter = reporter
        self.layout, self.day = plan.layout, plan.day
        self.started, self.started_at = time.monotonic(), iso(now_utc())
        self.stop = StopFlag()
        self.log = structlog.get_logger()
        self.uploader: Uploader | None = None
        self.run_record: dict[str, Any] = {}

    def run(self) -> ExitCode:
        with ExitStack() as stack:
            listeners = self._open(stack)
            try:
                tally = self._run_items(listeners)
            except BaseException as exc:
                # The loop broke (a bug, an I/O error on the run's own files): what it
                # recorded stays, and the summary says how the night ended.
                with contextlib.suppress(Exception):
                    self._close(RunTally(), failure_exit_code(exc))
                raise
            return self._close(tally, None)

    # -- open ----------------------------------------------------------------------
    def _open(self, stack: ExitStack) -> list[ItemListener]:
        settings, plan, layout, day = self.settings, self.plan, self.layout, self.day
        configure_logging(layout.engine_log(day), settings.logging.level)
        structlog.contextvars.bind_contextvars(run_id=self.run_id)
        storage = make_storage(settings.storage)
        if storage:  # what earlier runs left pending goes up first; then today's may be
            sync_before_run(layout.root, storage)
            mark_pending(layout, day)
        costs_path = layout.costs_path(day)
        atomic_write_json(costs_path, _merged_costs(costs_path, plan))
        self.syncer = Syncer()
        stack.callback(self.syncer.close)
        self.ledger = Ledger(layout.status_path(day), layout.journal_path(day), syncer=self.syncer)
        stack.callback(self.ledger.close)
        recovered = _record_settled(plan, self.ledger, storage is not None)
        listeners: list[ItemListener] = []
        if storage:
            self.uploader = Uploader(storage, layout, settings.storage.upload_workers)
            stack.callback(self.uploader.close)
            listeners.append(
                UploadListener(self.uploader, self.ledger, plan.policy.upload_partials)
            )
            for folder, item_id in recovered:  # finished before the scheduler died
                self.uploader.submit([*artifact_files(folder), folder / MANIFEST_NAME], item_id)
        self.notifier = observers_for_run(settings)
        stack.callback(self.notifier.close)  # waits at most [notify] close_timeout_s
        listeners.append(NotifyListener(self.notifier))
        self.run_record = self._run_record()
        self.ledger.record_run(self.run_record)
        self.log.info(JOB_STARTED, **{k: v for k, v in self.run_record.items() if k != "run_id"})
        for item in plan.to_skip:
            self.log.info(COIN_SKIPPED, symbol=item.symbol, why=item.why)
        self.notifier.run_started(self.run_record)
        return listeners

    def _run_record(self) -> dict[str, Any]:
        plan, policy = self.plan, self.plan.policy
        return {
            "run_id": self.run_id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self.started_at,
            "mode": policy.mode.value,
            "driver": self.settings.run.driver,
            "max_concurrent": policy.max_concurrent,
            "window": policy.window,
            "threads_per_item": policy.threads_per_item,
            "force": self.force,
            "resources": plan.resources.to_dict(),
            "trainer": plan.trainer,
            "symbols": len(plan.items),
            "to_run": len(plan.to_run),
            "to_skip": len(plan.to_skip),
            "retries": policy.retries,
        }

    # -- run -------------------------------------------------------------------------
    def _run_items(self, listeners: list[ItemListener]) -> RunTally:
        engine = Engine(
            self.plan,
            self.ledger,
            self.driver,
            self.run_id,
            self.stop,
            self.syncer,
            listeners,
            self.settings.logging.level,
        )
        with (
            _signals_set(self.stop),
            self.reporter.progress(
                self.ledger,
                self.run_record,
                self.day,
                self.layout.engine_log(self.day),
                self.settings.logging.level,
            ),
        ):
            return engine.run_items()

    # -- close -----------------------------------------------------------------------
    def _close(self, tally: RunTally, forced_code: ExitCode | None) -> ExitCode:
        layout, day = self.layout, self.day
        wall_s = time.monotonic() - self.started
        summary = build_summary(
            self.plan, self.ledger.entries, tally.attempts, self.run_record, wall_s
        )
        exit_code = _exit_code(summary, self.stop) if forced_code is None else forced_code
        summary.update(
            finished_at=iso(now_utc()),
            exit_code=int(exit_code),
            worker_startup_ms=_startup_stats(tally.startup_ms),
        )
        summary_path = layout.summary_path(day)
        atomic_write_json(summary_path, summary)
        self.ledger.record_run(
            {**self.run_record, "finished_at": summary["finished_at"], "exit_code": int(exit_code)}
        )
        self.ledger.close()
        self.syncer.close()
        self.notifier.run_finished(summary)  # sent from its own thread while uploads drain
        if self.uploader:
            self.uploader.submit([layout.costs_path(day), layout.status_path(day), summary_path])
            finish_run_uploads(layout, day, self.uploader.drain())
        self.log.info(
            JOB_COMPLETED,
            exit_code=int(exit_code),
            wall_minutes=summary["total_wall_minutes"],
            succeeded=summary["succeeded"],
            failed=summary["failed"],
            skipped=summary["skipped"],
            interrupted=summary["interrupted"],
        )
        self.reporter.result(summary, summary_path)
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
            recovered.append((plan.layout.root / entry.artifact_dir, item.item_id))
            entry = replace(entry, upload=UploadState.PENDING if has_storage else UploadState.NONE)
        ledger.record(entry)
    return recovered


def failure_exit_code(exc: BaseException) -> ExitCode:
    """The code a run that raised ends with (the CLI says the same)."""
    return ExitCode.IO_ERROR if isinstance(exc, OSError) else ExitCode.INTERNAL_ERROR


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
    return {
        "median": round(ordered[len(ordered) // 2], 2),
        "max": round(ordered[-1], 2),
        "n": len(ordered),
    }


@contextlib.contextmanager
def _signals_set(stop: StopFlag) -> Iterator[None]:
    """SIGINT/SIGTERM only set the flag; the loop stops gracefully, a second one at once."""
    previous = {sig: signal.signal(sig, stop.request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
