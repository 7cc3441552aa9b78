"""The night's record once its array job has ended: the ledger, the models' folders, the
summary and the notifications under the root, exactly as a local night leaves them.

It is a Night (job/nightly.py) whose items are not run but replayed: each child's
records, in attempt order, go through what the engine does when an attempt ends (the
folder unpacked and verified against its sha256.txt, the ledger entry, the listeners:
the promotion gate, the uploads, the notifications); the Night opens and closes the rest
(costs.json, the run's record, the summary, the finished message).
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import structlog

from retrainer.base.artifacts import MANIFEST_NAME, artifact_files, sha256_file, write_manifest
from retrainer.base.clock import iso, now_utc
from retrainer.base.config import Settings
from retrainer.base.exitcodes import ExitCode
from retrainer.base.lock import RunLock
from retrainer.base.logs import COIN_FAILED, COIN_SUCCEEDED
from retrainer.engine.drivers.protocol import Driver
from retrainer.engine.drivers.shipping import AttemptFolders, unpack, verify_shipped
from retrainer.engine.events import ItemListener, Listeners
from retrainer.engine.loop import RunTally
from retrainer.job.batch.batchplan import BatchPlan
from retrainer.job.batch.records import ItemRecord
from retrainer.job.batch.status import BatchAttempt, JobState, batch_attempts
from retrainer.job.batch.submit import batch_resources
from retrainer.job.nightly import Night, NightReporter
from retrainer.ledger.entries import (
    FAILED_STATES,
    Attempt,
    ItemState,
    LedgerEntry,
    Outcome,
    UploadState,
)
from retrainer.mirror.storage.protocol import StorageClient, UploadError
from retrainer.plan.planner import Action, Plan, PlanItem, build_plan, item_fields
from retrainer.training.contract import load_trainer

# "…; see /tmp/<the child's scratch>/logs/attempt-2.log": the log is under the root now.
_CHILD_LOG = re.compile(r"see \S+/logs/(attempt-\d+\.log)")


def _local_log(reason: str, log_dir: Path) -> str:
    return _CHILD_LOG.sub(lambda m: f"see {log_dir / m.group(1)}", reason)


def assemble_night(
    settings: Settings,
    plan: BatchPlan,
    job: JobState,
    records: dict[str, list[ItemRecord]],
    storage: StorageClient,
    reporter: NightReporter,
) -> ExitCode:
    """The ended job's night, recorded under the root (one run per root: its lock)."""
    night = night_plan(settings, plan)
    with RunLock(night.layout.lock_path(), plan.run_id):
        return BatchNight(settings, night, plan, job, records, storage, reporter).run()


def night_plan(settings: Settings, plan: BatchPlan) -> Plan:
    """The plan as it was at submission (planned again at that instant, before anything of
    the night was recorded); the items are the job's, whatever the data says now."""
    trainer = load_trainer(settings.trainer.plugin, settings.trainer.paths)
    submitted = datetime.fromisoformat(plan.submitted_at)
    night = build_plan(settings, trainer, batch_resources(settings.batch), submitted, plan.force)
    in_job = {i.item_id: i for i in plan.items}
    items: list[PlanItem] = []
    for item in night.items:
        if item.item_id in in_job:
            items.append(replace(item, action=Action.RUN, why=in_job[item.item_id].why))
        elif item.action is Action.RUN:
            items.append(replace(item, action=Action.SKIP, why="not in the Batch job's plan"))
        else:
            items.append(item)
    order = tuple(i.item_id for i in plan.items)
    return replace(night, items=tuple(items), order=order)


class BatchNight(Night):
    def __init__(
        self,
        settings: Settings,
        night: Plan,
        plan: BatchPlan,
        job: JobState,
        records: dict[str, list[ItemRecord]],
        storage: StorageClient,
        reporter: NightReporter,
    ) -> None:
        # The children ran on Batch: no driver here; _run_items replays their records.
        super().__init__(settings, night, cast(Driver, None), plan.run_id, plan.force, reporter)
        self.batch_plan, self.job, self.records, self.storage = plan, job, records, storage
        if job.wall_s is not None:  # the summary's wall time is the job's
            self.started = time.monotonic() - job.wall_s
        self.started_at = plan.submitted_at

    def _run_record(self) -> dict[str, Any]:
        return {
            **super()._run_record(),
            "driver": "batch",
            # Each item had a container of its own: all of them at once, as Batch allowed.
            "max_concurrent": len(self.batch_plan.items),
            "window": len(self.batch_plan.items),
            "concurrency_why": "AWS Batch: one container per item, as the compute "
            "environment allows",
            "batch_job_id": self.job.job_id,
            "batch_job_name": self.batch_plan.job_name,
            "batch_status": self.job.status,
        }

    def _run_items(self, listeners: list[ItemListener]) -> RunTally:
        tally, fanout = RunTally(), Listeners(listeners)
        self.ledger.record_many([self._pending(i.item_id) for i in self.plan.to_run])
        indices = {i.item_id: i.index for i in self.batch_plan.items}
        for item in self.plan.to_run:
            recorded = {r.attempt: r for r in self.records.get(item.item_id, [])}
            child = self.job.children.get(indices[item.item_id], {})
            # Batch counts every attempt, recorded or not (a child SIGKILLed mid-upload,
            # a spot reclaim, Batch's timeout leave no record): the ledger counts them all.
            told = {a.number: a for a in batch_attempts(child)}
            numbers = sorted(set(recorded) | set(told))
            if not numbers:
                said = child.get("statusReason") or child.get("status") or "no word from Batch"
                told = {1: BatchAttempt(1, status_reason=str(said))}
                numbers = [1]
            for number in numbers:
                last = number == numbers[-1]
                if number in recorded:
                    self._replay(item, recorded[number], last=last, tally=tally, fanout=fanout)
                else:
                    self._unrecorded(item, told[number], last=last, tally=tally, fanout=fanout)
        fanout.drain()
        self.syncer.drain()  # the summary describes what is on disk
        return tally

    def _pending(self, item_id: str) -> LedgerEntry:
        item = next(i for i in self.plan.items if i.item_id == item_id)
        at = iso(now_utc())
        entry = self.ledger.get(item_id) or LedgerEntry(item.symbol, ItemState.PENDING, at)
        return replace(
            entry,
            state=ItemState.PENDING,
            updated_at=at,
            why=item.why,
            run_id=self.run_id,
            item_id=item_id,
        )

    def _replay(
        self,
        item: PlanItem,
        record: ItemRecord,
        *,
        last: bool,
        tally: RunTally,
        fanout: Listeners,
    ) -> None:
        layout = self.plan.layout
        tally.attempts[item.item_id] = tally.attempts.get(item.item_id, 0) + 1
        out_dir = layout.new_attempt_dir(item.item_id, datetime.fromisoformat(record.started_at))
        outcome = self._unpacked(item, record, out_dir)
        attempt = Attempt(
            number=record.attempt,
            state=ItemState.RUNNING,
            started_at=record.started_at,
            artifact_dir=layout.relative(out_dir),
            device=record.device,
            threads=record.threads,
            node=record.node,
        ).ended(outcome, record.ended_at, record.seconds)
        entry = (self.ledger.get(item.item_id) or self._pending(item.item_id)).with_attempt(
            attempt, updated_at=record.ended_at, run_id=self.run_id
        )
        if outcome.state is ItemState.SUCCESS:
            manifest = write_manifest(out_dir, artifact_files(out_dir), durable=False)
            self.syncer.sync(*artifact_files(out_dir), out_dir / MANIFEST_NAME, out_dir)
            self.ledger.record(
                replace(
                    entry,
                    artifact_dir=attempt.artifact_dir,
                    manifest_sha256=manifest,
                    train_minutes=round(record.seconds / 60.0, 4),
                    metrics=outcome.metrics,
                    upload=UploadState.PENDING if self.plan.policy.mirrored else UploadState.NONE,
                    upload_error=None,
                )
            )
            self.log.info(
                COIN_SUCCEEDED,
                **item_fields(item),
                attempt=record.attempt,
                minutes=round(record.seconds / 60.0, 4),
                artifact_dir=attempt.artifact_dir,
                node=record.node,
            )
            fanout.item_succeeded(
                item.item_id, out_dir, [*artifact_files(out_dir), out_dir / MANIFEST_NAME]
            )
            return
        self.ledger.record(entry)
        tally.failures[item.item_id] = tally.failures.get(item.item_id, 0) + 1
        if not last:
            tally.retries += 1
        self.log.warning(
            COIN_FAILED,
            **item_fields(item),
            attempt=record.attempt,
            state=outcome.state.value,
            reason=outcome.reason,
            error_type=outcome.error_type,
            exit_code=record.exit_code,
            will_retry=not last,
            node=record.node,
        )
        if last and (outcome.state in FAILED_STATES or outcome.state is ItemState.INTERRUPTED):
            fanout.item_failed(item.item_id, outcome.reason)

    def _unpacked(self, item: PlanItem, record: ItemRecord, out_dir: Path) -> Outcome:
        """The attempt's folder from the bucket, checked: the tar against the record's
        sha256, the artifacts against the child's sha256.txt."""
        outcome = record.result
        if record.tar_key is None:
            if outcome.state is ItemState.SUCCESS:
                return Outcome(ItemState.FAILED, "its folder never reached the bucket")
            return outcome
        layout, day = self.plan.layout, self.plan.day
        folders = AttemptFolders(
            out_dir, layout.symbol_log_dir(day, item.item_id), layout.engine_log(day)
        )
        try:
            with tempfile.TemporaryDirectory(prefix="retrainer-attempt-") as scratch:
                tar = Path(scratch) / "attempt.tar"
                self.storage.get_file(record.tar_key, tar)
                if record.tar_sha256 and sha256_file(tar) != record.tar_sha256:
                    raise OSError(f"{record.tar_key} does not match its sha256")
                unpack(tar.read_bytes(), folders)
        except (UploadError, OSError) as exc:
            if outcome.state is ItemState.SUCCESS:
                return replace(
                    outcome,
                    state=ItemState.FAILED,
                    reason=f"its folder could not be fetched: {exc}",
                    error_type=type(exc).__name__,
                )
            return outcome
        outcome = replace(outcome, reason=_local_log(outcome.reason, folders.log_dir))
        problems = verify_shipped(out_dir)
        if problems and outcome.state is ItemState.SUCCESS:
            return replace(
                outcome,
                state=ItemState.FAILED,
                reason="its folder does not verify: " + "; ".join(problems[:3]),
                error_type="ManifestError",
            )
        return outcome

    def _unrecorded(
        self,
        item: PlanItem,
        told: BatchAttempt,
        *,
        last: bool,
        tally: RunTally,
        fanout: Listeners,
    ) -> None:
        """An attempt that left no record: its child never reached its commit (killed,
        never started); what Batch says of it is all there is."""
        outcome = told.outcome()
        ended_at = _iso_ms(told.stopped_ms) or iso(now_utc())
        started_at = _iso_ms(told.started_ms) or ended_at
        attempt = Attempt(told.number, ItemState.RUNNING, started_at, "", "cpu", 1).ended(
            outcome, ended_at, told.seconds
        )
        tally.attempts[item.item_id] = tally.attempts.get(item.item_id, 0) + 1
        tally.failures[item.item_id] = tally.failures.get(item.item_id, 0) + 1
        if not last:
            tally.retries += 1
        entry = self.ledger.get(item.item_id) or self._pending(item.item_id)
        self.ledger.record(entry.with_attempt(attempt, updated_at=ended_at, run_id=self.run_id))
        structlog.get_logger().warning(
            COIN_FAILED,
            **item_fields(item),
            attempt=told.number,
            state=outcome.state.value,
            reason=outcome.reason,
            error_type=outcome.error_type,
            exit_code=told.exit_code,
            will_retry=not last,
        )
        if last:  # no attempt came after it: the item failed tonight
            fanout.item_failed(item.item_id, outcome.reason)


def _iso_ms(ms: int | None) -> str | None:
    return iso(datetime.fromtimestamp(ms / 1000.0, tz=UTC)) if ms is not None else None
