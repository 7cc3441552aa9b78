"""The one outer loop: start what may start, wait, reap, enforce deadlines, record.

Modes chose the window (how many at once), the driver runs attempts, the supervisor owns
each process; this loop only moves items between the queue, the running set and the
ledger. Each pass of the loop body does one step (huey's Worker.loop); signal handlers
only set a flag that the loop reads.
"""

from __future__ import annotations

import heapq
import random
import signal
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from retrainer.base.artifacts import MANIFEST_NAME, artifact_files, iso, now_utc, write_manifest
from retrainer.base.config import Settings
from retrainer.base.logs import COIN_FAILED, COIN_RETRY_SCHEDULED, COIN_STARTED, COIN_SUCCEEDED
from retrainer.engine.drivers import Driver
from retrainer.engine.reaper import sweep_adopted_orphans
from retrainer.engine.retry import backoff_s
from retrainer.engine.supervisor import AttemptLimits, Supervisor
from retrainer.engine.worker import AttemptSpec
from retrainer.ledger.entries import (
    FAILED_STATES,
    Attempt,
    ItemState,
    LedgerEntry,
    Outcome,
    UploadState,
)
from retrainer.ledger.fsync import Syncer
from retrainer.ledger.journal import Ledger
from retrainer.mirror.uploads import UploadBatch, Uploader
from retrainer.plan.planner import Plan, PlanItem
from retrainer.training.contract import read_partials

MAX_IDLE_WAIT_S = 0.5
# The first one waits for the zygote's imports; a zygote slower than this starts
# the first items with fewer processes ready (each then forked when it starts).
FIRST_WAVE_WAIT_S = 60.0


class StopFlag:
    """Set from signal handlers; read by the loop. One signal: graceful; two: at once."""

    def __init__(self) -> None:
        self.count = 0
        self.signal_name: str | None = None

    def request(self, signum: int, _frame: object = None) -> None:
        self.count += 1
        self.signal_name = signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        return self.count > 0

    @property
    def immediate(self) -> bool:
        return self.count > 1


@dataclass(order=True)
class _Retry:
    not_before: float
    seq: int
    item: PlanItem = field(compare=False)
    reuse_dir: Path | None = field(compare=False)


@dataclass
class _Running:
    item: PlanItem
    supervisor: Supervisor
    attempt: Attempt
    out_dir: Path
    slot: int
    started: float
    stopped: bool = False  # terminated because the scheduler is stopping
    partials_sent: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class _Ended:
    """An item whose process ended: its slot is free; recorded once its status is known."""

    running: _Running
    ended_at: str
    seconds: float


@dataclass
class RunTally:
    attempts: dict[str, int] = field(default_factory=dict)
    startup_ms: list[float] = field(default_factory=list)


class Runner:
    def __init__(
        self, settings: Settings, plan: Plan, ledger: Ledger, driver: Driver,
        uploader: Uploader | None, run_id: str, stop: StopFlag, syncer: Syncer,
        on_final_failure: Callable[[str, str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.plan = plan
        self.ledger = ledger
        self.driver = driver
        self.uploader = uploader
        self.run_id = run_id
        self.stop = stop
        self.syncer = syncer  # the ledger's too: a manifest's fsync comes before its line's
        self.on_final_failure = on_final_failure  # (symbol, reason): failed for good
        self.tally = RunTally()
        self.log = structlog.get_logger()
        self._fresh: deque[PlanItem] = deque(plan.to_run)
        self._retries: list[_Retry] = []
        self._running: dict[int, _Running] = {}  # by slot
        self._ended: list[_Ended] = []
        self._free_slots = list(range(plan.window - 1, -1, -1))
        self._rng = random.Random(settings.run.seed)
        self._seq = 0
        self._stopping_since: float | None = None
        self._limits = AttemptLimits(settings.run.timeout_minutes * 60.0,
                                     settings.run.kill_grace_s, plan.memory_cap_mb)

    # -- the loop ----------------------------------------------------------------
    def execute(self) -> RunTally:
        self.ledger.record_many([self._pending_entry(item) for item in self.plan.to_run])
        self.ledger.flush()
        # The first wave's processes, forked before it starts (as a peer starts its pool).
        deadline = time.monotonic() + FIRST_WAVE_WAIT_S
        while not (self.stop.requested or time.monotonic() > deadline
                   or self.driver.keep_warm(self._warm_wanted(), MAX_IDLE_WAIT_S)):
            pass
        while self._running or self._ended or (
                not self.stop.requested and (self._fresh or self._retries)):
            self._step()
        self._record_uploads(self.uploader.drain() if self.uploader else [])
        self._mark_unstarted_after_stop()
        self._sweep_orphans()
        self.syncer.drain()  # the summary describes what is on disk
        return self.tally

    def _step(self) -> None:
        now = time.monotonic()
        if self.stop.requested:
            self._stop_running(now)
        else:
            self._start_ready(now)
        self.driver.keep_warm(self._warm_wanted())
        watched = [r.supervisor for r in [*self._running.values(),
                                           *(e.running for e in self._ended)]]
        self.driver.wait(watched, self._next_wakeup(now) - now)
        self._turn_over()
        self._record_ended()
        now = time.monotonic()
        for running in self._running.values():
            running.supervisor.enforce_limits(now)
        if self.uploader:
            self._upload_new_partials()
            self._record_uploads(self.uploader.finished())
        self.ledger.maybe_flush()

    def _warm_wanted(self) -> int:
        """A warm process for each slot that will start another item, none when stopping."""
        if self.stop.requested:
            return 0
        return min(self.plan.window, len(self._fresh) + len(self._retries))

    def _next_wakeup(self, now: float) -> float:
        wakeups = [now + MAX_IDLE_WAIT_S]
        wakeups += [r.supervisor.next_wakeup() for r in self._running.values()]
        if self._stopping_since is not None:
            wakeups.append(self._stopping_since + self.settings.run.stop_grace_s)
        if self._retries and self._free_slots and not self.stop.requested:
            wakeups.append(self._retries[0].not_before)
        return min(wakeups)

    # -- starting ------------------------------------------------------------------
    def _start_ready(self, now: float) -> None:
        while self._free_slots:
            if self._retries and self._retries[0].not_before <= now:
                retry = heapq.heappop(self._retries)
                self._start(retry.item, retry.reuse_dir)
            elif self._fresh:
                self._start(self._fresh.popleft(), None)
            else:
                return

    def _start(self, item: PlanItem, reuse_dir: Path | None) -> None:
        slot = self._free_slots.pop()
        layout = self.plan.layout
        entry = self.ledger.get(item.symbol) or self._new_entry(item)
        number = len(entry.attempts) + 1
        self.tally.attempts[item.symbol] = self.tally.attempts.get(item.symbol, 0) + 1
        device = self.plan.resources.device_for_slot(slot)
        attempt = Attempt(number=number, state=ItemState.RUNNING, started_at=iso(now_utc()),
                          artifact_dir="", device=device, threads=self.plan.threads_per_item,
                          slot=slot)
        try:
            out_dir = layout.new_attempt_dir(item.symbol, now_utc())
            attempt = replace(attempt, artifact_dir=layout.relative(out_dir))
            spec = self._spec(item, number, out_dir, device, reuse_dir)
            supervisor = self.driver.submit(spec, self._limits)
        except (OSError, EOFError) as exc:  # disk full, fork failed, zygote gone
            self._free_slots.append(slot)
            outcome = Outcome(ItemState.FAILED, f"could not start the attempt: {exc}",
                              error_type=type(exc).__name__)
            self._finish(item, attempt, layout.model_dir(item.symbol), outcome,
                         iso(now_utc()), 0.0)
            return
        # From the hand-over on, as the deadline: the fork, and the first one's wait for
        # the zygote's imports, are not this item's time.
        started = supervisor.started_monotonic
        attempt = replace(attempt, pid=supervisor.pid, started_at=iso(now_utc()))
        self.ledger.record(entry.with_attempt(attempt, updated_at=attempt.started_at,
                                              why=item.why, run_id=self.run_id), durable=False)
        self.log.info(COIN_STARTED, symbol=item.symbol, attempt=number, pid=supervisor.pid,
                      device=device, threads=self.plan.threads_per_item, slot=slot,
                      artifact_dir=attempt.artifact_dir)
        self._running[slot] = _Running(item, supervisor, attempt, out_dir, slot, started)

    def _spec(self, item: PlanItem, number: int, out_dir: Path, device: str,
              reuse_dir: Path | None) -> AttemptSpec:
        layout, settings = self.plan.layout, self.settings
        return AttemptSpec(
            run_id=self.run_id, symbol=item.symbol, attempt=number, data_path=item.data_path,
            min_rows=settings.data.min_rows, costs=item.costs.to_dict(), out_dir=out_dir,
            log_dir=layout.symbol_log_dir(self.plan.day, item.symbol),
            engine_log=layout.engine_log(self.plan.day), trainer=settings.trainer.plugin,
            params=self.plan.trainer_params, seed=item.seed, device=device,
            threads=self.plan.threads_per_item, log_level=settings.logging.level,
            reuse_dir=reuse_dir,
        )

    # -- finishing -----------------------------------------------------------------
    def _free_ended_slots(self) -> bool:
        """An item whose process ended frees its slot at once. It is recorded when its exit
        status arrives from the zygote (busy forking for the next items, it may take
        tens of milliseconds), and nothing waits for that."""
        freed = False
        for slot, running in list(self._running.items()):
            if running.supervisor.has_ended():
                del self._running[slot]
                self._free_slots.append(slot)
                self._ended.append(_Ended(running, iso(now_utc()),
                                          time.monotonic() - running.started))
                freed = True
        return freed

    def _turn_over(self) -> None:
        """Slots of ended items go to the next items before any bookkeeping is done."""
        if self._free_ended_slots() and not self.stop.requested:
            self._start_ready(time.monotonic())

    def _record_ended(self) -> None:
        for ended in [e for e in self._ended if e.running.supervisor.is_done()]:
            self._turn_over()  # one that ended meanwhile does not wait for this record
            self._ended.remove(ended)
            running = ended.running
            outcome = running.supervisor.reap()
            if outcome.state is not ItemState.SUCCESS:
                self._sweep_orphans()  # what a dying item left behind was adopted by us
            if running.stopped and outcome.state is not ItemState.SUCCESS:
                outcome = Outcome(ItemState.INTERRUPTED,
                                  f"scheduler stopped by {self.stop.signal_name}",
                                  exit_code=outcome.exit_code)
            self._finish(running.item, running.attempt, running.out_dir, outcome,
                         ended.ended_at, ended.seconds)

    def _sweep_orphans(self) -> None:
        spare = {r.supervisor.pid for r in [*self._running.values(),
                                            *(e.running for e in self._ended)]
                 if r.supervisor.pid}
        killed = sweep_adopted_orphans(spare)
        if killed:
            self.log.warning("orphans_killed", pids=killed,
                             why="processes left behind by an item that ended")

    def _finish(self, item: PlanItem, attempt: Attempt, out_dir: Path, outcome: Outcome,
                ended_at: str, seconds: float) -> None:
        if outcome.startup_ms is not None:
            self.tally.startup_ms.append(outcome.startup_ms)
        manifest_sha = None
        if outcome.state is ItemState.SUCCESS:
            try:
                files = artifact_files(out_dir)
                manifest_sha = write_manifest(out_dir, files, durable=False)
                # The artifacts (however the trainer wrote them), the manifest, its folder.
                self.syncer.sync(*files, out_dir / MANIFEST_NAME, out_dir, out_dir.parent)
            except OSError as exc:
                outcome = Outcome(ItemState.FAILED, f"could not write {MANIFEST_NAME}: {exc}",
                                  exit_code=outcome.exit_code, error_type=type(exc).__name__)
        ended = attempt.ended(outcome, ended_at, seconds)
        entry = (self.ledger.get(item.symbol) or self._new_entry(item)).with_attempt(
            ended, updated_at=ended.ended_at, run_id=self.run_id)
        if outcome.state is ItemState.SUCCESS:
            self._succeeded(item, entry, ended, out_dir, manifest_sha, outcome, seconds)
        else:
            self.ledger.record(entry)
            self._failed(item, ended, out_dir, outcome)

    def _succeeded(self, item: PlanItem, entry: LedgerEntry, attempt: Attempt, out_dir: Path,
                   manifest_sha: str | None, outcome: Outcome, seconds: float) -> None:
        upload = UploadState.PENDING if self.uploader else UploadState.NONE
        self.ledger.record(replace(
            entry, artifact_dir=attempt.artifact_dir, manifest_sha256=manifest_sha,
            train_minutes=round(seconds / 60.0, 4), metrics=outcome.metrics, upload=upload,
            upload_error=None))
        self.log.info(COIN_SUCCEEDED, symbol=item.symbol, attempt=attempt.number,
                      minutes=round(seconds / 60.0, 4), artifact_dir=attempt.artifact_dir,
                      metrics=_headline(outcome.metrics))
        if self.uploader:
            self.uploader.submit([*artifact_files(out_dir), out_dir / MANIFEST_NAME], item.symbol)

    def _failed(self, item: PlanItem, attempt: Attempt, out_dir: Path, outcome: Outcome) -> None:
        tries = self.tally.attempts.get(item.symbol, 0)
        will_retry = (outcome.state in FAILED_STATES and not self.stop.requested
                      and tries <= self.settings.run.retries)
        self.log.warning(COIN_FAILED, symbol=item.symbol, attempt=attempt.number,
                         state=outcome.state.value, reason=outcome.reason,
                         error_type=outcome.error_type, exit_code=outcome.exit_code,
                         stack=list(outcome.stack), will_retry=will_retry)
        if not will_retry:
            if outcome.state in FAILED_STATES and self.on_final_failure is not None:
                self.on_final_failure(item.symbol, outcome.reason)
            return
        delay = backoff_s(tries, self.settings.run.backoff_base_s, self.settings.run.backoff_cap_s,
                          self._rng)
        self._seq += 1
        heapq.heappush(self._retries, _Retry(time.monotonic() + delay, self._seq, item, out_dir))
        self.log.info(COIN_RETRY_SCHEDULED, symbol=item.symbol, retry=tries,
                      delay_s=round(delay, 3))

    # -- stopping ------------------------------------------------------------------
    def _stop_running(self, now: float) -> None:
        """Start nothing new; running items get stop_grace_s to finish, then are killed
        (SIGTERM, kill_grace_s, SIGKILL). A second signal kills them at once."""
        grace_s = self.settings.run.stop_grace_s
        if self._stopping_since is None:
            self._stopping_since = now
            self.log.warning("job_stopping", signal=self.stop.signal_name,
                             running=len(self._running), queued=len(self._fresh),
                             grace_s=grace_s)
        if not (self.stop.immediate or now >= self._stopping_since + grace_s):
            return
        for running in self._running.values():
            running.stopped = True
            running.supervisor.terminate()
            if self.stop.immediate:
                running.supervisor.kill()

    def _mark_unstarted_after_stop(self) -> None:
        if not self.stop.requested:
            return
        for item in [*self._fresh, *(r.item for r in self._retries)]:
            entry = self.ledger.get(item.symbol)
            if entry is not None and entry.state is ItemState.PENDING:
                self.ledger.record(replace(entry, updated_at=iso(now_utc()),
                                           why=f"not started: {self.stop.signal_name}"))

    # -- ledger helpers --------------------------------------------------------------
    def _new_entry(self, item: PlanItem) -> LedgerEntry:
        return LedgerEntry(symbol=item.symbol, state=ItemState.PENDING,
                           updated_at=iso(now_utc()), why=item.why, run_id=self.run_id)

    def _pending_entry(self, item: PlanItem) -> LedgerEntry:
        """Queued. A symbol that succeeded earlier keeps that state until it really reruns:
        its verified artifacts are still the truth if this run is stopped first."""
        previous = self.ledger.get(item.symbol)
        if previous is None:
            return self._new_entry(item)
        state = ItemState.SUCCESS if previous.state is ItemState.SUCCESS else ItemState.PENDING
        return replace(previous, state=state, why=item.why, updated_at=iso(now_utc()),
                       run_id=self.run_id)

    def _record_uploads(self, batches: list[UploadBatch]) -> None:
        for batch in batches:
            if batch.symbol is None or not batch.record:
                continue
            entry = self.ledger.get(batch.symbol)
            if entry is None:
                continue
            # A failed upload leaves the item `success` and its files pending for a sync.
            state = UploadState.UPLOADED if batch.ok else UploadState.PENDING
            self.ledger.record(replace(entry, upload=state, upload_error=batch.error))

    def _upload_new_partials(self) -> None:
        """With storage.upload_partials, each partial output goes up as soon as it is saved."""
        if self.uploader is None or not self.settings.storage.upload_partials:
            return
        for running in self._running.values():
            saved = read_partials(running.out_dir).get("files", {})
            new = sorted(set(saved) - running.partials_sent)
            if new:
                running.partials_sent.update(new)
                self.uploader.submit([running.out_dir / n for n in new], running.item.symbol,
                                     record=False)


def _headline(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """A few numbers for the log line; the full set is in metrics.json and the ledger."""
    if not metrics:
        return {}
    scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float)}
    return dict(list(scalars.items())[:8])
