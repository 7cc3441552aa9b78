"""The one outer loop: start what may start, wait, reap, enforce deadlines, record.

The plan's policy chose the window (how many at once), the driver runs attempts and hands
back a handle each; this loop only moves items between the queue, the running set and the
ledger, and tells its listeners (uploads, notifications) what happened. Each pass of the
loop body does one step (huey's Worker.loop); signal handlers only set a flag that the
loop reads.
"""

from __future__ import annotations

import heapq
import math
import random
import signal
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any

import structlog

from retrainer.base.artifacts import MANIFEST_NAME, artifact_files, write_manifest
from retrainer.base.clock import iso, now_utc
from retrainer.base.logs import (
    COIN_FAILED,
    COIN_PREPARED,
    COIN_RETRY_SCHEDULED,
    COIN_STARTED,
    COIN_SUCCEEDED,
    DEADLINE_PASSED,
    RETRY_BUDGET_SPENT,
)
from retrainer.engine.admission import Admission
from retrainer.engine.attempt import AttemptSpec, Stage
from retrainer.engine.drivers.protocol import AttemptHandle, Driver
from retrainer.engine.events import ItemListener, Listeners
from retrainer.engine.reaper import sweep_adopted_orphans
from retrainer.engine.retry import backoff_s
from retrainer.engine.supervisor import AttemptLimits
from retrainer.ledger.entries import (
    FAILED_STATES,
    NO_RETRY,
    Attempt,
    ItemState,
    LedgerEntry,
    Outcome,
    UploadState,
)
from retrainer.ledger.fsync import Syncer
from retrainer.ledger.journal import Ledger
from retrainer.plan.planner import Plan, PlanItem, item_fields

MAX_IDLE_WAIT_S = 0.5
# The first one waits for the zygote's imports; a zygote slower than this starts
# the first items with fewer processes ready (each then forked when it starts).
FIRST_WAVE_WAIT_S = 60.0


class StopFlag:
    """Set from signal handlers; read by the loop. One signal: graceful; two: at once.
    The night's deadline stops it as one signal does (graceful), for a reason of its own."""

    def __init__(self) -> None:
        self.count = 0
        self.signal_name: str | None = None
        self.deadline_passed: str | None = None  # "deadline 06:00 passed", once it has

    def request(self, signum: int, _frame: object = None) -> None:
        self.count += 1
        self.signal_name = signal.Signals(signum).name

    def pass_deadline(self, why: str) -> None:
        self.deadline_passed = why

    @property
    def requested(self) -> bool:
        return self.count > 0 or self.deadline_passed is not None

    @property
    def by_signal(self) -> bool:
        return self.count > 0

    @property
    def why(self) -> str:
        """What stopped the run: the signal's name, else the deadline."""
        return self.signal_name or self.deadline_passed or ""

    @property
    def immediate(self) -> bool:
        return self.count > 1


@dataclass(order=True)
class _Retry:
    not_before: float
    seq: int
    item: PlanItem = field(compare=False)
    reuse_dir: Path | None = field(compare=False)
    stage: Stage = field(default="full", compare=False)  # the stage the retry runs again


@dataclass(frozen=True)
class _Prepared:
    """Two stages: an item whose prepare succeeded, waiting for a train slot."""

    item: PlanItem
    folder: Path  # the prepare attempt's folder: the train stage's reuse_dir


@dataclass
class _Running:
    item: PlanItem
    handle: AttemptHandle
    attempt: Attempt
    out_dir: Path
    slot: int
    started: float
    stopped: bool = False  # terminated because the scheduler is stopping
    stage: Stage = "full"
    prepared: Path | None = None  # a train stage's prepare folder (its retry reuses it)


@dataclass(frozen=True)
class _Ended:
    """An item whose process ended: its slot is free; recorded once its status is known."""

    running: _Running
    ended_at: str
    seconds: float


@dataclass
class RunTally:
    attempts: dict[str, int] = field(default_factory=dict)  # every stage's attempts
    failures: dict[str, int] = field(default_factory=dict)  # failed attempts (retries' rule)
    startup_ms: list[float] = field(default_factory=list)
    retries: int = 0  # retries scheduled, all items together (the run's retry budget)
    retries_denied: list[str] = field(default_factory=list)  # failed final: budget spent


class Engine:
    """Runs a plan's items through a driver; the head's only writer of their ledger entries."""

    def __init__(
        self,
        plan: Plan,
        ledger: Ledger,
        driver: Driver,
        run_id: str,
        stop: StopFlag,
        syncer: Syncer,
        listeners: list[ItemListener] | None = None,
        log_level: str = "info",
    ) -> None:
        self.plan = plan
        self.policy = plan.policy
        self.ledger = ledger
        self.driver = driver
        self.run_id = run_id
        self.stop = stop
        self.syncer = syncer  # the ledger's too: a manifest's fsync comes before its line's
        self.listeners = Listeners(listeners or [])
        self.log_level = log_level
        self.tally = RunTally()
        self.log = structlog.get_logger()
        self._fresh: deque[PlanItem] = deque(plan.to_run)
        self._retries: list[_Retry] = []
        self._running: dict[int, _Running] = {}  # by slot
        self._ended: list[_Ended] = []
        self._free_slots = list(range(self.policy.window - 1, -1, -1))
        # Two stages: prepare slots numbered after the window's, and the items prepared.
        window, prepares = self.policy.window, self.policy.prepare_slots
        self._free_prepare = list(range(window + prepares - 1, window - 1, -1))
        self._prepared: list[_Prepared] = []
        self._rng = random.Random(self.policy.seed)
        self._seq = 0
        self._stopping_since: float | None = None
        self._deadline = _monotonic_at(self.policy.deadline_at)
        self._limits = AttemptLimits(
            self.policy.timeout_s,
            self.policy.kill_grace_s,
            self.policy.memory_cap_mb,
            gpu_share=self.policy.gpu_share,
        )
        self._admission = Admission(
            self.policy.memory_budget_mb, self.policy.memory_cap_mb, self.policy.window, self.log
        )

    # -- the loop ----------------------------------------------------------------
    def run_items(self) -> RunTally:
        self.ledger.record_many([self._pending_entry(item) for item in self.plan.to_run])
        self.ledger.flush()
        # The first wave's processes, forked before it starts (as a peer starts its pool).
        deadline = time.monotonic() + FIRST_WAVE_WAIT_S
        while not (
            self.stop.requested
            or time.monotonic() > deadline
            or self.driver.keep_warm(self._warm_wanted(), MAX_IDLE_WAIT_S)
        ):
            pass
        while (
            self._running
            or self._ended
            or (not self.stop.requested and (self._fresh or self._retries or self._prepared))
        ):
            self._step()
        self.listeners.drain()
        self._log_retry_budget()
        self._mark_unstarted_after_stop()
        self._sweep_orphans()
        self.syncer.drain()  # the summary describes what is on disk
        return self.tally

    def _step(self) -> None:
        now = time.monotonic()
        self._check_deadline(now)
        if self.stop.requested:
            self._stop_running(now)
        else:
            self._start_ready(now)
        self.driver.keep_warm(self._warm_wanted())
        watched = [r.handle for r in [*self._running.values(), *(e.running for e in self._ended)]]
        self.driver.wait(watched, self._next_wakeup(now) - now)
        self._turn_over()
        self._record_ended()
        now = time.monotonic()
        for running in self._running.values():
            running.handle.enforce_limits(now)
        self.listeners.poll()
        self.ledger.maybe_flush()

    def _warm_wanted(self) -> int:
        """A warm process for each slot that will start another item, none when stopping."""
        if self.stop.requested:
            return 0
        slots = self.policy.window + self.policy.prepare_slots
        return min(slots, len(self._fresh) + len(self._retries) + len(self._prepared))

    def _next_wakeup(self, now: float) -> float:
        wakeups = [now + MAX_IDLE_WAIT_S]
        wakeups += [r.handle.next_wakeup() for r in self._running.values()]
        if self._stopping_since is not None:
            wakeups.append(self._stopping_since + self.policy.stop_grace_s)
        if self._retries and (self._free_slots or self._free_prepare) and not self.stop.requested:
            # A due one held back by memory admission waits for an item to end, not spins.
            later = [r.not_before for r in self._retries if r.not_before > now]
            if later:
                wakeups.append(min(later))
        if self._deadline is not None and not self.stop.requested:
            wakeups.append(self._deadline)
        return min(wakeups)

    # -- starting ------------------------------------------------------------------
    def _start_ready(self, now: float) -> None:
        if self.policy.two_stage:
            self._start_two_stages(now)
            return
        while self._free_slots and not self._check_deadline(now):
            retry = self._ready_retry(now)
            # Memory admission: the first in this order whose expected peak fits (admission.py).
            item = self._admission.choose(chain([retry.item] if retry else [], self._fresh))
            if item is None:
                return
            if retry is not None and item is retry.item:
                self._retries.remove(retry)
                heapq.heapify(self._retries)
                self._start(retry.item, retry.reuse_dir)
            else:
                self._fresh.remove(item)
                self._start(item, None)

    def _start_two_stages(self, now: float) -> None:
        """Fresh items and prepare retries go to the prepare slots; the train slots take
        train retries and the prepared items, longest first, through memory admission.
        (Prepare attempts are outside admission: see docs/scheduling.md#two-stages.)"""
        while self._free_prepare and not self._check_deadline(now):
            head = self._fresh[0] if self._fresh else None
            retry = self._ready_retry(now, "prepare", head)
            if retry is not None:
                self._retries.remove(retry)
                heapq.heapify(self._retries)
                self._start(retry.item, retry.reuse_dir, "prepare")
            elif self._fresh:
                self._start(self._fresh.popleft(), None, "prepare")
            else:
                break
        while self._free_slots and not self._check_deadline(now):
            head = self._prepared[0].item if self._prepared else None
            retry = self._ready_retry(now, "train", head)
            queue = chain([retry.item] if retry else [], (p.item for p in self._prepared))
            item = self._admission.choose(queue)
            if item is None:
                return
            if retry is not None and item is retry.item:
                self._retries.remove(retry)
                heapq.heapify(self._retries)
                self._start(item, retry.reuse_dir, "train", prepared=retry.reuse_dir)
            else:
                prepared = next(p for p in self._prepared if p.item is item)
                self._prepared.remove(prepared)
                self._start(item, prepared.folder, "train", prepared=prepared.folder)

    def _queue_prepared(self, item: PlanItem, folder: Path) -> None:
        """In the queue's order: longest first (by the train stage's history), else FIFO."""
        ready = _Prepared(item, folder)
        if self.policy.order != "longest_first":
            self._prepared.append(ready)
            return
        key = _expected_key(item)
        at = next(
            (i for i, p in enumerate(self._prepared) if _expected_key(p.item) < key),
            len(self._prepared),
        )
        self._prepared.insert(at, ready)

    def _ready_retry(
        self, now: float, stage: Stage | None = None, head: PlanItem | None = None
    ) -> _Retry | None:
        """The retry to start before the next queued item, if one is due. In plan order,
        the earliest due; longest first, the longest expected of those due, and only if it
        is expected to take at least as long as the next queued item (the same rule as the
        queue: an item without history counts as the longest). Two stages: only the
        retries of that stage, before that stage's queue."""
        due = [r for r in self._retries if r.not_before <= now and stage in (None, r.stage)]
        if not due:
            return None
        if stage is None:
            head = self._fresh[0] if self._fresh else None
        if self.policy.order == "longest_first":
            retry = max(due, key=lambda r: (_expected_key(r.item), -r.seq))
            if head is not None and _expected_key(head) > _expected_key(retry.item):
                return None
            return retry
        return min(due)

    def _check_deadline(self, now: float) -> bool:
        """Whether the run stopped starting items; past the deadline it does, once: the
        running ones then get the stop grace, as on SIGTERM, and the rest never start."""
        if self.stop.requested:
            return True
        if self._deadline is None or now < self._deadline:
            return False
        why = f"deadline {self.policy.deadline} passed"
        self.stop.pass_deadline(why)
        self.log.warning(
            DEADLINE_PASSED,
            deadline=self.policy.deadline,
            deadline_at=iso(self.policy.deadline_at) if self.policy.deadline_at else None,
            running=len(self._running),
            not_started=len(self._fresh) + len(self._retries) + len(self._prepared),
            grace_s=self.policy.stop_grace_s,
        )
        return True

    def _start(
        self,
        item: PlanItem,
        reuse_dir: Path | None,
        stage: Stage = "full",
        prepared: Path | None = None,
    ) -> None:
        pool = self._free_prepare if stage == "prepare" else self._free_slots
        slot = pool.pop()
        layout = self.plan.layout
        entry = self.ledger.get(item.item_id) or self._new_entry(item)
        number = len(entry.attempts) + 1
        self.tally.attempts[item.item_id] = self.tally.attempts.get(item.item_id, 0) + 1
        if stage == "prepare":  # the CPU stage, on a thread budget of its own
            device, threads = "cpu", self.policy.prepare_threads
        else:
            device, threads = (
                self.plan.resources.device_for_slot(slot),
                self.policy.threads_per_item,
            )
        attempt = Attempt(
            number=number,
            state=ItemState.RUNNING,
            started_at=iso(now_utc()),
            artifact_dir="",
            device=device,
            threads=threads,
            slot=slot,
            stage=None if stage == "full" else stage,
        )
        try:
            out_dir = layout.new_attempt_dir(item.item_id, now_utc())
            attempt = replace(attempt, artifact_dir=layout.relative(out_dir))
            spec = self._spec(item, number, out_dir, device, reuse_dir, stage, threads)
            handle = self.driver.submit(spec, self._limits)
        except (OSError, EOFError) as exc:  # disk full, fork failed, zygote gone
            pool.append(slot)
            outcome = Outcome(
                ItemState.FAILED,
                f"could not start the attempt: {exc}",
                error_type=type(exc).__name__,
            )
            model_dir = layout.model_dir(item.symbol)
            self._finish(item, attempt, model_dir, outcome, iso(now_utc()), 0.0, stage, prepared)
            return
        # From the hand-over on, as the deadline: the fork, and the first one's wait for
        # the zygote's imports, are not this item's time.
        started = handle.started_monotonic
        attempt = replace(attempt, pid=handle.pid, started_at=iso(now_utc()))
        self.ledger.record(
            entry.with_attempt(
                attempt,
                updated_at=attempt.started_at,
                why=item.why,
                run_id=self.run_id,
                promotion=None,  # the gate judges this attempt anew; an earlier one's is gone
            ),
            durable=False,
        )
        self.log.info(
            COIN_STARTED,
            **item_fields(item),
            attempt=number,
            pid=handle.pid,
            device=device,
            threads=threads,
            slot=slot,
            artifact_dir=attempt.artifact_dir,
            **({} if stage == "full" else {"stage": stage}),
        )
        self._running[slot] = _Running(
            item, handle, attempt, out_dir, slot, started, stage=stage, prepared=prepared
        )
        if stage != "prepare":
            self._admission.started(slot, item)
        self.listeners.attempt_started(item.item_id, out_dir)

    def _spec(
        self,
        item: PlanItem,
        number: int,
        out_dir: Path,
        device: str,
        reuse_dir: Path | None,
        stage: Stage = "full",
        threads: int | None = None,
    ) -> AttemptSpec:
        plan, layout = self.plan, self.plan.layout
        return AttemptSpec(
            run_id=self.run_id,
            symbol=item.symbol,
            attempt=number,
            data_path=item.data_path,
            min_rows=plan.min_rows,
            costs=item.costs.to_dict() if item.costs else {},  # an item that runs has them
            out_dir=out_dir,
            log_dir=layout.symbol_log_dir(plan.day, item.item_id),
            engine_log=layout.engine_log(plan.day),
            trainer=plan.trainer,
            params=dict(item.params) if item.params is not None else plan.trainer_params,
            seed=item.seed,
            device=device,
            threads=self.policy.threads_per_item if threads is None else threads,
            log_level=self.log_level,
            reuse_dir=reuse_dir,
            item_id=item.item_id,
            data_format=plan.data_format.to_dict(),
            champion_dir=None if stage == "prepare" else self._champion_dir(item),
            keep_features=self.policy.keep_features,
            stage=stage,
            window=item.window.to_dict() if item.window is not None else None,
        )

    def _champion_dir(self, item: PlanItem) -> Path | None:
        """The champion the gate compares with: scored on this attempt's test span."""
        if self.policy.promote != "gated" or item.champion is None:
            return None
        return item.champion.folder(self.plan.layout.root)

    # -- finishing -----------------------------------------------------------------
    def _free_ended_slots(self) -> bool:
        """An item whose process ended frees its slot at once. It is recorded when its exit
        status arrives from the zygote (busy forking for the next items, it may take
        tens of milliseconds), and nothing waits for that."""
        freed = False
        for slot, running in list(self._running.items()):
            if running.handle.has_exited():
                del self._running[slot]
                if running.stage == "prepare":
                    self._free_prepare.append(slot)
                else:
                    self._admission.released(slot)
                    self._free_slots.append(slot)
                self._ended.append(
                    _Ended(running, iso(now_utc()), time.monotonic() - running.started)
                )
                self.listeners.attempt_ended(running.item.item_id, running.out_dir)
                freed = True
        return freed

    def _turn_over(self) -> None:
        """Slots of ended items go to the next items before any bookkeeping is done."""
        if self._free_ended_slots() and not self.stop.requested:
            self._start_ready(time.monotonic())

    def _record_ended(self) -> None:
        for ended in [e for e in self._ended if e.running.handle.outcome_ready()]:
            self._turn_over()  # one that ended meanwhile does not wait for this record
            self._ended.remove(ended)
            running = ended.running
            outcome = running.handle.outcome()
            if running.stage != "prepare":
                self._admission.measured(running.item, outcome)
            if outcome.state is not ItemState.SUCCESS:
                self._sweep_orphans()  # what a dying item left behind was adopted by us
            if running.stopped and outcome.state is not ItemState.SUCCESS:
                outcome = Outcome(
                    ItemState.INTERRUPTED,
                    f"scheduler stopped by {self.stop.signal_name}"
                    if self.stop.by_signal
                    else f"scheduler stopped: {self.stop.deadline_passed}",
                    exit_code=outcome.exit_code,
                )
            self._finish(
                running.item,
                running.attempt,
                running.out_dir,
                outcome,
                ended.ended_at,
                ended.seconds,
                running.stage,
                running.prepared,
            )

    def _sweep_orphans(self) -> None:
        spare = {
            r.handle.pid
            for r in [*self._running.values(), *(e.running for e in self._ended)]
            if r.handle.pid
        } | set(self.driver.helper_pids())
        killed = sweep_adopted_orphans(spare)
        if killed:
            self.log.warning(
                "orphans_killed", pids=killed, why="processes left behind by an item that ended"
            )

    def _finish(
        self,
        item: PlanItem,
        attempt: Attempt,
        out_dir: Path,
        outcome: Outcome,
        ended_at: str,
        seconds: float,
        stage: Stage = "full",
        prepared: Path | None = None,
    ) -> None:
        if outcome.startup_ms is not None:
            self.tally.startup_ms.append(outcome.startup_ms)
        if stage == "prepare" and outcome.state is ItemState.SUCCESS:
            self._prepare_succeeded(item, attempt.ended(outcome, ended_at, seconds), out_dir)
            return
        manifest_sha = None
        if outcome.state is ItemState.SUCCESS:
            try:
                files = artifact_files(out_dir)
                manifest_sha = write_manifest(out_dir, files, durable=False)
                # The artifacts (however the trainer wrote them), the manifest, its folder.
                self.syncer.sync(*files, out_dir / MANIFEST_NAME, out_dir, out_dir.parent)
            except OSError as exc:
                outcome = Outcome(
                    ItemState.FAILED,
                    f"could not write {MANIFEST_NAME}: {exc}",
                    exit_code=outcome.exit_code,
                    error_type=type(exc).__name__,
                )
        will_retry = False
        if outcome.state is not ItemState.SUCCESS:
            will_retry, outcome = self._retry_decision(item, outcome)
        ended = attempt.ended(outcome, ended_at, seconds)
        entry = (self.ledger.get(item.item_id) or self._new_entry(item)).with_attempt(
            ended, updated_at=ended.ended_at, run_id=self.run_id
        )
        if outcome.state is ItemState.SUCCESS:
            self._succeeded(item, entry, ended, out_dir, manifest_sha, outcome, seconds)
        else:
            self.ledger.record(entry)
            # A retry runs its stage again: a train stage's reuses the prepare's folder.
            retry_stage, reuse = stage, (prepared or out_dir) if stage == "train" else out_dir
            self._failed(item, ended, reuse, outcome, will_retry, retry_stage)

    def _prepare_succeeded(self, item: PlanItem, attempt: Attempt, out_dir: Path) -> None:
        """Two stages: the prepare attempt is in the item's timeline, but the item is not
        done (pending again, its entry's other fields untouched, no listener told): it
        waits for a train slot with this folder as its train stage's reuse_dir."""
        entry = (self.ledger.get(item.item_id) or self._new_entry(item)).with_attempt(
            attempt, updated_at=attempt.ended_at, run_id=self.run_id
        )
        self.ledger.record(replace(entry, state=ItemState.PENDING))
        self.log.info(
            COIN_PREPARED,
            **item_fields(item),
            attempt=attempt.number,
            seconds=attempt.seconds,
            artifact_dir=attempt.artifact_dir,
        )
        self._queue_prepared(item, out_dir)

    def _succeeded(
        self,
        item: PlanItem,
        entry: LedgerEntry,
        attempt: Attempt,
        out_dir: Path,
        manifest_sha: str | None,
        outcome: Outcome,
        seconds: float,
    ) -> None:
        upload = UploadState.PENDING if self.policy.mirrored else UploadState.NONE
        self.ledger.record(
            replace(
                entry,
                artifact_dir=attempt.artifact_dir,
                manifest_sha256=manifest_sha,
                train_minutes=round(seconds / 60.0, 4),
                metrics=outcome.metrics,
                upload=upload,
                upload_error=None,
            )
        )
        self.log.info(
            COIN_SUCCEEDED,
            **item_fields(item),
            attempt=attempt.number,
            minutes=round(seconds / 60.0, 4),
            artifact_dir=attempt.artifact_dir,
            metrics=_headline(outcome.metrics),
        )
        self.listeners.item_succeeded(
            item.item_id, out_dir, [*artifact_files(out_dir), out_dir / MANIFEST_NAME]
        )

    def _retry_decision(self, item: PlanItem, outcome: Outcome) -> tuple[bool, Outcome]:
        """Whether a failed attempt is retried: up to `retries` for each item, and no more
        than the run's retry budget for all of them; past it the failure is final, and its
        reason says so. Failed attempts count, not stages: a prepare that succeeded is no
        try spent (with one stage, every attempt before a failure failed: the same count)."""
        tries = self.tally.failures.get(item.item_id, 0) + 1
        self.tally.failures[item.item_id] = tries
        if outcome.state not in FAILED_STATES or self.stop.requested or tries > self.policy.retries:
            return False, outcome
        budget = self.policy.retry_budget
        if budget is not None and self.tally.retries >= budget:
            self.tally.retries_denied.append(item.item_id)
            reason = f"{outcome.reason}{NO_RETRY}the run's retry budget ({budget}) is spent"
            return False, replace(outcome, reason=reason)
        self.tally.retries += 1
        return True, outcome

    def _log_retry_budget(self) -> None:
        """Once a night: the items the spent budget left without a retry."""
        if self.tally.retries_denied:
            self.log.warning(
                RETRY_BUDGET_SPENT,
                budget=self.policy.retry_budget,
                retries=self.tally.retries,
                left_without_retry=len(self.tally.retries_denied),
                symbols=self.tally.retries_denied[:20],
            )

    def _failed(
        self,
        item: PlanItem,
        attempt: Attempt,
        out_dir: Path,
        outcome: Outcome,
        will_retry: bool,
        stage: Stage = "full",
    ) -> None:
        tries = self.tally.failures.get(item.item_id, 0)
        self.log.warning(
            COIN_FAILED,
            **item_fields(item),
            attempt=attempt.number,
            state=outcome.state.value,
            reason=outcome.reason,
            error_type=outcome.error_type,
            exit_code=outcome.exit_code,
            stack=list(outcome.stack),
            will_retry=will_retry,
        )
        if not will_retry:
            if outcome.state in FAILED_STATES:
                self.listeners.item_failed(item.item_id, outcome.reason)
            return
        delay = backoff_s(tries, self.policy.backoff_base_s, self.policy.backoff_cap_s, self._rng)
        self._seq += 1
        retry = _Retry(time.monotonic() + delay, self._seq, item, out_dir, stage)
        heapq.heappush(self._retries, retry)
        self.log.info(
            COIN_RETRY_SCHEDULED, **item_fields(item), retry=tries, delay_s=round(delay, 3)
        )

    # -- stopping ------------------------------------------------------------------
    def _stop_running(self, now: float) -> None:
        """Start nothing new; running items get stop_grace_s to finish, then are killed
        (SIGTERM, kill_grace_s, SIGKILL). A second signal kills them at once."""
        grace_s = self.policy.stop_grace_s
        if self._stopping_since is None:
            self._stopping_since = now
            self.log.warning(
                "job_stopping",
                signal=self.stop.signal_name,
                deadline=self.stop.deadline_passed,
                running=len(self._running),
                queued=len(self._fresh),
                grace_s=grace_s,
            )
        if not (self.stop.immediate or now >= self._stopping_since + grace_s):
            return
        for running in self._running.values():
            running.stopped = True
            running.handle.terminate()
            if self.stop.immediate:
                running.handle.kill()

    def _mark_unstarted_after_stop(self) -> None:
        if not self.stop.requested:
            return
        waiting = [
            *self._fresh,
            *(r.item for r in self._retries),
            *(p.item for p in self._prepared),
        ]
        for item in waiting:
            entry = self.ledger.get(item.item_id)
            if entry is not None and entry.state is ItemState.PENDING:
                self.ledger.record(
                    replace(
                        entry,
                        updated_at=iso(now_utc()),
                        why=f"not started: {self.stop.why}",
                    )
                )
            elif entry is not None and entry.state in FAILED_STATES:
                # It failed, truly; the retry it was due never started, and says why.
                self.ledger.record(replace(entry, why=f"retry not started: {self.stop.why}"))

    # -- ledger helpers --------------------------------------------------------------
    def _new_entry(self, item: PlanItem) -> LedgerEntry:
        return LedgerEntry(
            symbol=item.symbol,
            state=ItemState.PENDING,
            updated_at=iso(now_utc()),
            why=item.why,
            run_id=self.run_id,
            item_id=item.item_id,
        )

    def _pending_entry(self, item: PlanItem) -> LedgerEntry:
        """Queued. A symbol that succeeded earlier keeps its entry as it is (state, time,
        run, why) until it really reruns: its verified artifacts are still the truth if
        this run is stopped first, and the summary reports it not started."""
        previous = self.ledger.get(item.item_id)
        if previous is None:
            return self._new_entry(item)
        if previous.state is ItemState.SUCCESS:
            return previous
        return replace(
            previous,
            state=ItemState.PENDING,
            why=item.why,
            updated_at=iso(now_utc()),
            run_id=self.run_id,
        )


def _monotonic_at(moment: datetime | None) -> float | None:
    """A wall-clock moment on the monotonic clock the loop reads (None: none)."""
    if moment is None:
        return None
    return time.monotonic() + (moment - now_utc()).total_seconds()


def _expected_key(item: PlanItem) -> float:
    """Longest first: an item without history counts as the longest."""
    return math.inf if item.expected_s is None else item.expected_s


def _headline(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """A few numbers for the log line; the full set is in metrics.json and the ledger."""
    if not metrics:
        return {}
    scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return dict(list(scalars.items())[:8])
