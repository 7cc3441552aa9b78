"""The night's lifetime: plan, lock, then open / run / close.

open   logging, pending uploads of earlier runs, costs.json, the ledger and its fsync
       thread, the listeners (uploads, notifications), the run's record
run    the engine's loop over the plan's items
close  the summary, the run's finish in the ledger, the last uploads, the notification

Everything opened is closed through one ExitStack, and the summary is still attempted when
the loop raises. What is shown to a person goes through a NightReporter (the CLI's console);
this module prints nothing itself.

Before all of it, the invocation (invocation.py): engine.log and the run's observers exist as
soon as the settings do, SIGINT/SIGTERM stop the run at once until the night starts, and an
invocation that ends before its night records its own end (the trainer, the lock, bad input,
an error, a stop) leaves its record, its summary and its finished message there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import structlog

from retrainer.base.artifacts import MANIFEST_NAME, Layout, artifact_files, atomic_write_json
from retrainer.base.clock import iso, now_utc
from retrainer.base.config import Settings
from retrainer.base.exitcodes import ExitCode
from retrainer.base.lock import RunLock
from retrainer.base.logs import (
    COIN_FAILED,
    COIN_SKIPPED,
    DEADLINE_AT_RISK,
    JOB_COMPLETED,
    JOB_STARTED,
    SYMBOLS_UNRANKED,
    configure_logging,
)
from retrainer.base.resources import Resources, detect_resources
from retrainer.engine.drivers.protocol import Driver
from retrainer.engine.drivers.registry import make_driver
from retrainer.engine.events import ItemListener, Listeners
from retrainer.engine.loop import Engine, RunTally, StopFlag
from retrainer.engine.reaper import become_subreaper
from retrainer.job.invocation import Invocation, NightRecord, exit_code_for, record_unfinished
from retrainer.job.listeners import NotifyListener, UploadListener
from retrainer.job.mlflow_tracking import MlflowListener
from retrainer.job.promotion import PromotionListener, promote_settings_for
from retrainer.job.search import SearchListener, searched
from retrainer.job.summary import build_summary, failure_tolerance, retry_budget_summary
from retrainer.ledger.entries import (
    FAILED_STATES,
    ItemState,
    LedgerEntry,
    UploadState,
    failed_on_bad_data,
    skipped_in_quarantine,
)
from retrainer.ledger.fsync import Syncer
from retrainer.ledger.journal import Ledger
from retrainer.mirror.storage.registry import make_storage
from retrainer.mirror.sync import finish_run_uploads, mark_pending, sync_before_run
from retrainer.mirror.uploads import Uploader, mirrored_files
from retrainer.notify.messages import severity
from retrainer.notify.protocol import Notifier
from retrainer.notify.registry import observers_for_run
from retrainer.plan.forecast import deadline_warning, forecast_line
from retrainer.plan.planner import Plan, build_plan
from retrainer.plan.policy import likely_threads_per_item
from retrainer.plan.search import check_space
from retrainer.training.contract import Trainer, load_trainer, validate_trainer_params


class NightReporter(Protocol):
    """What a person sees of a night: the plan, live progress, the result."""

    def plan(self, plan: Plan, dry_run: bool) -> None: ...

    def progress(
        self, ledger: Ledger, run: Mapping[str, Any], day: str, engine_log: Path, log_level: str
    ) -> AbstractContextManager[None]: ...

    def result(self, summary: dict[str, Any], summary_path: Path) -> None: ...


@dataclass(frozen=True)
class Work:
    """What an invocation runs through a night's machinery: the nightly run, or a
    backtest's windows (job/backtest.py)."""

    layout: Callable[[Settings], Layout]
    plan: Callable[[Settings, Trainer, Resources, datetime, bool], Plan]
    # The local zygote reads the plan's data files once for all attempts: the plan is then
    # made before the driver starts (a backtest's many windows per symbol).
    preload_bars: bool = False
    # Once the plan is made, before the night opens (not in a dry run).
    begin: Callable[[Plan], None] | None = None
    # After the night closed (its summary written): e.g. assemble a backtest's forecasts.
    finish: Callable[[Plan, Trainer], object] | None = None
    # The healthchecks pinger and the Prometheus exporter hear it (the nights they watch).
    monitored: bool = True


NIGHTLY = Work(lambda settings: Layout(settings.run.root.resolve()), build_plan)


def run_night(
    settings: Settings,
    *,
    force: bool,
    dry_run: bool,
    reporter: NightReporter,
    work: Work = NIGHTLY,
) -> ExitCode:
    now = now_utc()
    if dry_run:  # reads only; writes nothing under the root and tells no one
        trainer = load_trainer(settings.trainer.plugin, settings.trainer.paths)
        reporter.plan(work.plan(settings, trainer, _dry_run_resources(settings), now, force), True)
        return ExitCode.OK
    if work is NIGHTLY:
        check_search_before_anything(settings)
    invocation = Invocation.begin(settings, now, force, work.layout(settings))
    _open_log(invocation)
    # Built as soon as there are settings: a night that stops before it starts is told too.
    notifier = observers_for_run(settings, work.monitored)
    night: Night | None = None
    try:
        with _stop_before_the_night() as before_the_night:
            trainer = load_trainer(settings.trainer.plugin, settings.trainer.paths)
            promote = promote_settings_for(settings.promote, trainer)
            settings = settings.model_copy(update={"promote": promote})
            invocation.stage = "lock"
            with RunLock(invocation.layout.lock_path(), invocation.run_id):
                become_subreaper()  # what an item leaves behind when it dies is ours to kill
                plan: Plan | None = None
                if work.preload_bars and settings.run.driver == "local":
                    invocation.stage = "plan"
                    plan = work.plan(settings, trainer, detect_resources(), now, force)
                invocation.stage = "driver"
                driver = make_driver(
                    settings,
                    _preload(settings, trainer),
                    likely_threads_per_item(settings),
                    plan_bars(plan) if plan is not None else (),
                )
                driver.start()  # the zygote imports torch while the plan reads the data
                try:
                    if plan is None:
                        invocation.stage = "plan"
                        resources = driver.resources() or detect_resources()
                        plan = work.plan(settings, trainer, resources, now, force)
                    if work.begin is not None:
                        work.begin(plan)
                    before_the_night.restore()  # from here the night handles its signals
                    invocation.stage = "night"
                    night = Night(
                        settings, plan, driver, invocation.run_id, force, reporter, notifier
                    )
                    code = night.run()
                finally:
                    driver.close()
                if work.finish is not None:
                    work.finish(plan, trainer)
                return code
    except BaseException as exc:  # the night that did not record its end is recorded here
        record_unfinished(invocation, exc, night.record if night else NightRecord(), notifier)
        raise
    finally:
        notifier.close()  # waits at most [notify] close_timeout_s


def check_search_before_anything(settings: Settings) -> None:
    """[search]'s keys and values, refused (bad input, exit 2) before the run writes
    anything; the plan checks each candidate's combination again. A trainer that cannot
    be loaded is left to the invocation, which records why."""
    if not settings.search.enabled:
        return
    try:
        trainer = load_trainer(settings.trainer.plugin, settings.trainer.paths)
        params = validate_trainer_params(trainer, settings.trainer.params)
    except Exception:
        return
    check_space(settings.search, trainer, settings.trainer.plugin, params)


def plan_bars(plan: Plan) -> list[tuple[str, int, dict[str, object]]]:
    """The data files of the items that run, once each, for the zygote to read."""
    paths = dict.fromkeys(str(item.data_path) for item in plan.to_run)
    return [(path, plan.min_rows, plan.data_format.to_dict()) for path in paths]


def _dry_run_resources(settings: Settings) -> Resources:
    """This machine's, or a remote driver's cluster (joined for a look, nothing started)."""
    if settings.run.driver == "local":
        return detect_resources()
    driver = make_driver(settings, (), 1)
    driver.start()
    try:
        return driver.resources() or detect_resources()
    finally:
        driver.close()


def _open_log(invocation: Invocation) -> None:
    """engine.log from the start, so that a night that stops before it starts says why
    there too; a log that cannot be opened leaves the console (the run reports why)."""
    level = invocation.settings.logging.level
    try:
        configure_logging(invocation.layout.engine_log(invocation.day), level)
    except OSError:
        configure_logging(None, level)
    structlog.contextvars.bind_contextvars(run_id=invocation.run_id)


class _StopBeforeTheNight:
    """Before the night starts (trainer, lock, plan), SIGINT and SIGTERM stop the run by
    raising KeyboardInterrupt (even where the shell had SIGINT ignored, as for a job put
    in the background), so that the stop is recorded; the night's loop later sets its
    own handlers (a flag, a graceful stop)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {
            sig: signal.signal(sig, self._raise) for sig in self.SIGNALS
        }

    @staticmethod
    def _raise(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}


@contextlib.contextmanager
def _stop_before_the_night() -> Iterator[_StopBeforeTheNight]:
    handler = _StopBeforeTheNight()
    try:
        yield handler
    finally:
        handler.restore()


# For a trainer that does not say what it needs: what a typical trainer imports.
DEFAULT_PRELOAD = ("torch", "pandas", "pyarrow.parquet")


def _preload(settings: Settings, trainer: Trainer) -> list[str]:
    """The trainer's module and the heavy modules it declares, imported once in the
    zygote; torch too if importing the trainer pulled it in; and its `warm_up` hook, if it
    has one, called there once (engine/preload.py)."""
    module = settings.trainer.plugin.partition(":")[0]
    heavy = list(getattr(trainer, "preload_modules", DEFAULT_PRELOAD))
    if "torch" in sys.modules:
        heavy.append("torch")
    warm = getattr(trainer, "warm_up", None)
    hook = [f"{warm.__module__}:{warm.__name__}"] if callable(warm) else []
    return [module, *heavy, *hook]


class Night:
    def __init__(
        self,
        settings: Settings,
        plan: Plan,
        driver: Driver,
        run_id: str,
        force: bool,
        reporter: NightReporter,
        notifier: Notifier | None = None,
    ) -> None:
        """notifier: the invocation's observers, closed by the caller; None: the night
        builds and closes its own."""
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
        self.mlflow: MlflowListener | None = None
        self.run_record: dict[str, Any] = {}
        self._given_notifier = notifier
        self.recorded_start = False  # its run is in the day's ledger
        self.summary: dict[str, Any] | None = None  # the engine_summary.json it wrote
        self.notified = False  # its observers were told how it finished

    def _trackers(self) -> list[ItemListener]:
        return [self.mlflow] if self.mlflow is not None else []

    @property
    def record(self) -> NightRecord:
        return NightRecord(self.recorded_start, self.summary, self.notified)

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
            sync_before_run(layout.root, storage, settings.storage.upload_features)
            mark_pending(layout, day)
        costs_path = layout.costs_path(day)
        atomic_write_json(costs_path, _merged_costs(costs_path, plan))
        self.syncer = Syncer()
        stack.callback(self.syncer.close)
        self.ledger = Ledger(layout.status_path(day), layout.journal_path(day), syncer=self.syncer)
        stack.callback(self.ledger.close)
        recovered = _record_settled(plan, self.ledger, storage is not None)
        _record_bad_data(plan, self.ledger, self.run_id)
        _record_fresh(plan, self.ledger, self.run_id)
        _record_quarantined(plan, self.ledger, self.run_id)
        if storage:
            self.uploader = Uploader(storage, layout, settings.storage.upload_workers)
            stack.callback(self.uploader.close)
        # First: the others read the decision it records in the ledger entry. A backtest's
        # windows are no challengers: nothing is judged or promoted.
        promotion, judging = self._judging()
        listeners: list[ItemListener] = [judging] if judging else []
        if self.uploader:
            listeners.append(
                UploadListener(
                    self.uploader,
                    self.ledger,
                    plan.policy.upload_partials,
                    plan.policy.upload_features,
                )
            )
            for folder, item_id in recovered:  # finished before the scheduler died
                files = [*artifact_files(folder), folder / MANIFEST_NAME]
                self.uploader.submit(mirrored_files(files, plan.policy.upload_features), item_id)
        if settings.mlflow.enabled and promotion:  # after it: it reads the gate's decision
            self._open_mlflow(stack, judging, listeners)
        if judging:
            trackers = [] if isinstance(judging, SearchListener) else self._trackers()
            _promote_unjudged(plan, self.ledger, Listeners([judging, *trackers]))
        if self._given_notifier is None:
            self.notifier = observers_for_run(settings)
            stack.callback(self.notifier.close)  # waits at most [notify] close_timeout_s
        else:
            self.notifier = self._given_notifier
        listeners.append(NotifyListener(self.notifier))
        self.run_record = {**self._run_record(), **schedule_record(plan, self.started_at)}
        self.ledger.record_run(self.run_record)
        self.recorded_start = True
        self.log.info(
            JOB_STARTED,
            **{k: v for k, v in self.run_record.items() if k not in ("run_id", "expected_s")},
        )
        if self.run_record.get("deadline_warning"):  # the start message says it too
            self.log.warning(
                DEADLINE_AT_RISK,
                deadline=self.run_record["deadline"],
                forecast_finish_at=self.run_record.get("forecast_finish_at"),
                warning=self.run_record["deadline_warning"],
            )
        for item in plan.to_skip:
            self.log.info(COIN_SKIPPED, symbol=item.symbol, why=item.why)
        if plan.unranked:
            self.log.warning(SYMBOLS_UNRANKED, symbols=settings.run.symbols, unranked=plan.unranked)
        for item in plan.to_fail:
            self.log.error(
                COIN_FAILED,
                symbol=item.symbol,
                attempt=0,
                state=ItemState.FAILED.value,
                reason=item.why,
                error_type="DataError",
                will_retry=False,
            )
        self.notifier.run_started(self.run_record)
        for item in plan.to_fail:  # as any failure: no attempt will tell the listeners
            self.notifier.item_failed(item.symbol, item.why)
        return listeners

    def _open_mlflow(
        self, stack: ExitStack, judging: ItemListener | None, listeners: list[ItemListener]
    ) -> None:
        self.mlflow = MlflowListener(
            self.settings.mlflow, self.layout, self.ledger, self.run_id, self.plan.trainer
        )
        stack.callback(self.mlflow.close)  # a safety net: _close closes it with the summary
        if isinstance(judging, SearchListener):  # hears a candidate once it is judged
            judging.follow(self.mlflow)
        else:
            listeners.append(self.mlflow)

    def _judging(self) -> tuple[PromotionListener | None, ItemListener | None]:
        """The gate's listener, and what hears successes for it: itself, or in front of it
        a search's (only each searched symbol's chosen candidate meets the gate)."""
        if self.plan.kind != "night":
            return None, None
        promotion = PromotionListener(
            self.plan, self.ledger, self.settings.promote, self.run_id, self.uploader
        )
        if not searched(self.plan):
            return promotion, promotion
        search = SearchListener(
            self.plan, self.ledger, self.settings.search, self.run_id, promotion
        )
        return promotion, search

    def _run_record(self) -> dict[str, Any]:
        plan, policy = self.plan, self.plan.policy
        return {
            "run_id": self.run_id,
            "kind": plan.kind,  # night | backtest
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started_at": self.started_at,
            "mode": policy.mode.value,
            "driver": self.settings.run.driver,
            "max_concurrent": policy.max_concurrent,
            "window": policy.window,
            "concurrency_why": policy.concurrency_why,  # "memory allows 5, … → 5"
            "threads_per_item": policy.threads_per_item,
            "force": self.force,
            "resources": plan.resources.to_dict(),
            "trainer": plan.trainer,
            "symbols": len(plan.items),
            "to_run": len(plan.to_run),
            "to_skip": len(plan.to_skip),
            "bad_data": len(plan.to_fail),  # failed before they started: their data is bad
            "unranked": dict(plan.unranked),  # topN: files left out, unreadable
            "retries": policy.retries,
            "retry_budget": policy.retry_budget,
            "quarantined": len(plan.quarantined),  # skipped: failed too many nights in a row
            **_search_record(self.settings, plan),
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
        ended_first = f"stopped by {self.stop.signal_name}" if self.stop.requested else "ended"
        deadline = self.stop.deadline_passed if not self.stop.by_signal else None
        summary = build_summary(
            self.plan,
            self.ledger.entries,
            tally.attempts,
            {k: v for k, v in self.run_record.items() if k != "expected_s"},
            wall_s,
            ended_first,
            unstarted_reason=f"not started: {deadline}" if deadline else None,
        )
        if self.plan.policy.deadline is not None:
            summary["deadline_passed"] = self.stop.deadline_passed is not None
        summary.update(failure_tolerance(summary, self.settings.run.tolerated_failure_ratio))
        summary["retry_budget"] = retry_budget_summary(
            self.plan.policy.retry_budget, tally.retries, tally.retries_denied
        )
        exit_code = _exit_code(summary, self.stop) if forced_code is None else forced_code
        summary.update(
            finished_at=iso(now_utc()),
            exit_code=int(exit_code),
            worker_startup_ms=_startup_stats(tally.startup_ms),
        )
        summary["severity"] = severity(summary)
        summary_path = layout.summary_path(day)
        atomic_write_json(summary_path, summary)
        self.summary = summary
        self.ledger.record_run(
            {**self.run_record, "finished_at": summary["finished_at"], "exit_code": int(exit_code)}
        )
        if self.mlflow is not None:  # the night's MLflow run gets its counts and exit code
            self.mlflow.close(summary)
        self.ledger.close()
        self.syncer.close()
        self.notifier.run_finished(summary)  # sent from its own thread while uploads drain
        self.notified = True
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
            not_started=summary["not_started"],
        )
        self.reporter.result(summary, summary_path)
        return exit_code


def schedule_record(plan: Plan, started_at: str) -> dict[str, Any]:
    """The queue's order, its forecast from the night's start, and the deadline, for the
    run record: the start message, the live view and `retrainer status` read them."""
    policy = plan.policy
    out: dict[str, Any] = {"order": policy.order}
    forecast = plan.forecast
    if forecast is not None and forecast.items:
        forecast = replace(forecast, planned_at=datetime.fromisoformat(started_at))
        out.update(forecast.to_record(), forecast=forecast_line(forecast))
        # Each item's expected seconds, in start order: the live view's ETA replays them.
        out["expected_s"] = {i.item_id: round(i.expected_s, 2) for i in forecast.items}
    if policy.deadline is not None and policy.deadline_at is not None:
        out.update(deadline=policy.deadline, deadline_at=iso(policy.deadline_at))
        if forecast is not None and forecast.items:
            out["deadline_warning"] = deadline_warning(
                forecast, policy.deadline, policy.deadline_at
            )
    return out


def _search_record(settings: Settings, plan: Plan) -> dict[str, Any]:
    """A search's symbols and their candidates' count, for the live view and `status`."""
    groups = searched(plan)
    if not groups:
        return {}
    search = settings.search
    candidates = {symbol: len(items) for symbol, items in groups.items()}
    return {
        "search": {"metric": search.metric, "direction": search.direction, "candidates": candidates}
    }


def _record_bad_data(plan: Plan, ledger: Ledger, run_id: str) -> None:
    """Items whose data is bad fail now, each with the file and row that is wrong; they
    never start an attempt, so no retry follows."""
    at = iso(now_utc())
    for item in plan.to_fail:
        ledger.record(failed_on_bad_data(item.previous, item.symbol, item.why, at, run_id))


def _record_fresh(plan: Plan, ledger: Ledger, run_id: str) -> None:
    """A fresh item is skipped by this run: the day's ledger says so, unless it already
    holds a success of the day (which stays)."""
    at = iso(now_utc())
    for item in plan.fresh:
        if item.previous is not None and item.previous.state is ItemState.SUCCESS:
            continue
        entry = item.previous or LedgerEntry(item.symbol, ItemState.SKIPPED, at)
        ledger.record(
            replace(entry, state=ItemState.SKIPPED, updated_at=at, why=item.why, run_id=run_id)
        )


def _record_quarantined(plan: Plan, ledger: Ledger, run_id: str) -> None:
    """A quarantined item is skipped by this run: the day's ledger says so and why, and
    keeps the failed nights behind it (so its streak outlives the days a plan reads)."""
    at = iso(now_utc())
    for item in plan.quarantined:
        quarantine = item.quarantine
        if quarantine is None:
            continue
        ledger.record(
            skipped_in_quarantine(
                item.previous,
                item.symbol,
                item.why,
                at,
                run_id,
                quarantine.failed_at,
                quarantine.last_failure,
            )
        )


def _promote_unjudged(plan: Plan, ledger: Ledger, promotion: ItemListener) -> None:
    """A success of the day the gate never judged (its scheduler died in between, or it was
    recovered from a dead one just now) meets the gate, and MLflow, before anything else
    runs; one that raises is logged and the night goes on (Listeners)."""
    for item in plan.items:
        entry = ledger.get(item.item_id)
        if (
            entry is None
            or entry.state is not ItemState.SUCCESS
            or entry.promotion is not None
            or entry.artifact_dir is None
        ):
            continue
        folder = plan.layout.root / entry.artifact_dir
        if folder.is_dir():
            promotion.item_succeeded(item.item_id, folder, [])


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
    return exit_code_for(exc)


def _exit_code(summary: dict[str, Any], stop: StopFlag) -> ExitCode:
    """130 when stopped by a signal; 4 when the deadline passed with items not started
    or cut short; 1 when an item failed, unless the share that failed is within
    [run] tolerated_failure_ratio (summary's `tolerated_failures`); else 0."""
    if stop.by_signal:
        return ExitCode.INTERRUPTED
    if stop.deadline_passed and (summary["not_started"] or summary["interrupted"]):
        return ExitCode.DEADLINE_PASSED
    failed = {s.value for s in FAILED_STATES}
    # A failed candidate fails alone: its symbol failed only if its search chose nothing.
    chosen = {sym for sym, s in summary.get("searches", {}).items() if s.get("chosen")}
    any_failed = any(
        s["status"] in failed
        for item_id, s in summary["by_symbol"].items()
        if not ("/" in item_id and item_id.partition("/")[0] in chosen)
    )
    if any_failed and not summary.get("tolerated_failures"):
        return ExitCode.SOME_FAILED
    return ExitCode.OK


def _merged_costs(path: Path, plan: Plan) -> dict[str, Any]:
    """costs.json keeps every symbol costed today; this run's figures win."""
    try:
        existing = json.loads(path.read_text("utf-8")).get("symbols", {})
    except (OSError, ValueError, AttributeError):
        existing = {}
    costed = {i.symbol: i.costs.to_dict() for i in plan.items if i.costs is not None}
    symbols = {**existing, **costed}
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
