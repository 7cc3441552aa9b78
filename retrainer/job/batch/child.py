"""`retrainer batch child`: what one array child runs in its container.

It reads its index (AWS_BATCH_JOB_ARRAY_INDEX; a plain job: 0) and attempt
(AWS_BATCH_JOB_ATTEMPT), fetches its item's data from the bucket (checked against its
sha256), runs the attempt exactly as a Ray or Dask node does (engine.drivers.node: a
zygote-forked process under the local Supervisor: deadline, memory cap, the tree killed,
the end classified), puts the packed attempt folder in the bucket, and writes its record
LAST: a record in the bucket means its folder is there. The exit code tells Batch whether
a retry can help (exits.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from retrainer.base.artifacts import atomic_write_bytes, sha256_bytes
from retrainer.base.clock import iso, now_utc
from retrainer.engine.attempt import AttemptSpec
from retrainer.engine.drivers.node import NODE_DRIVERS, NodeAttempt, run_on_node
from retrainer.engine.reaper import become_subreaper
from retrainer.engine.supervisor import AttemptLimits
from retrainer.job.batch.batchplan import BatchItem, BatchPlan, Location
from retrainer.job.batch.exits import EXIT_FOR_GOOD, EXIT_RETRY, exit_code_for
from retrainer.job.batch.records import ItemRecord, attempt_of
from retrainer.ledger.entries import ItemState, Outcome
from retrainer.mirror.storage.protocol import StorageClient, UploadError
from retrainer.mirror.storage.s3 import S3Options, S3Storage

INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"
ATTEMPT_ENV = "AWS_BATCH_JOB_ATTEMPT"
JOB_ID_ENV = "AWS_BATCH_JOB_ID"


@dataclass
class _Stop:
    """Batch stops a child with SIGTERM (its timeout, a cancel): the attempt's tree goes
    first (SIGTERM, the grace, SIGKILL), and its record says so."""

    requested: bool = False

    def request(self, _signum: int, _frame: object = None) -> None:
        self.requested = True


def run_child(
    plan_uri: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    addressing_style: str = "auto",
    environ: dict[str, str] | None = None,
) -> int:
    """One attempt of one item; the container's exit code. region, endpoint_url and
    addressing_style reach the bucket to read the plan, which says the rest."""
    environ = dict(os.environ if environ is None else environ)
    log = structlog.get_logger()
    try:
        bucket, key = _split_uri(plan_uri)
        reader = _storage(Location(bucket, "", region, endpoint_url, addressing_style))
        plan = BatchPlan.from_dict(_read_json(reader, key))
    except UploadError as exc:  # the bucket out of reach: a retry may find it
        log.error("batch_plan_unreadable", reason=str(exc))
        return EXIT_RETRY
    except (ValueError, KeyError, TypeError) as exc:  # a plan we cannot read: for good
        log.error("batch_plan_invalid", reason=f"{type(exc).__name__}: {exc}")
        return EXIT_FOR_GOOD
    index = int(environ.get(INDEX_ENV, "0") or 0)
    if not 0 <= index < len(plan.items):
        log.error("batch_index_out_of_range", index=index, items=len(plan.items))
        return EXIT_FOR_GOOD
    item = plan.items[index]
    storage = _storage(plan.location)
    attempt = _attempt_number(environ, storage, plan, item)
    structlog.contextvars.bind_contextvars(run_id=plan.run_id, symbol=item.symbol, attempt=attempt)
    return _Child(plan, item, attempt, storage, environ.get(JOB_ID_ENV)).run()


class _Child:
    def __init__(
        self,
        plan: BatchPlan,
        item: BatchItem,
        attempt: int,
        storage: StorageClient,
        job_id: str | None,
    ) -> None:
        self.plan, self.item, self.attempt = plan, item, attempt
        self.storage, self.job_id = storage, job_id
        self.node = socket.gethostname()
        self.log = structlog.get_logger()

    def run(self) -> int:
        become_subreaper()  # what the attempt leaves behind when it dies is ours to kill
        stop = _Stop()
        previous = signal.signal(signal.SIGTERM, stop.request)
        started_at, started = iso(now_utc()), time.monotonic()
        try:
            with tempfile.TemporaryDirectory(prefix="retrainer-batch-") as scratch:
                outcome, payload = self._attempt(Path(scratch), stop)
                if stop.requested and outcome.state is not ItemState.SUCCESS:
                    outcome = Outcome(
                        ItemState.INTERRUPTED, "stopped by Batch (SIGTERM)", outcome.exit_code
                    )
                tar_key, tar_sha = self._put_folder(Path(scratch), payload)
        finally:
            signal.signal(signal.SIGTERM, previous)
            NODE_DRIVERS.close()
        if payload is not None and tar_key is None:
            outcome = Outcome(
                ItemState.FAILED,
                "the attempt's folder could not be stored in the bucket",
                outcome.exit_code,
                error_type="UploadError",
            )
        code = exit_code_for(outcome)
        record = ItemRecord(
            item_id=self.item.item_id,
            index=self.item.index,
            attempt=self.attempt,
            outcome=outcome.to_dict(),
            started_at=started_at,
            ended_at=iso(now_utc()),
            seconds=round(time.monotonic() - started, 3),
            exit_code=code,
            tar_key=tar_key,
            tar_sha256=tar_sha,
            node=self.node,
            batch_job_id=self.job_id,
            threads=self.plan.threads,
            device=self.plan.device,
        )
        try:  # the commit point: written last
            self.storage.put_json(
                record.to_dict(), self.plan.record_key(self.item.item_id, self.attempt)
            )
        except UploadError as exc:
            self.log.error("batch_record_not_written", reason=str(exc))
            return EXIT_RETRY
        self.log.info("batch_child_ended", state=outcome.state.value, exit_code=code)
        return code

    def _attempt(self, scratch: Path, stop: _Stop) -> tuple[Outcome, bytes | None]:
        item, plan = self.item, self.plan
        try:
            data = self._fetch_data(scratch)
        except (UploadError, OSError) as exc:
            return Outcome(
                ItemState.FAILED, f"could not fetch the data: {exc}", error_type=type(exc).__name__
            ), None
        champion = self._fetch_champion(scratch)
        spec = AttemptSpec(
            run_id=plan.run_id,
            symbol=item.symbol,
            attempt=self.attempt,
            data_path=Path(item.data_name),  # the node's own copy replaces it
            min_rows=plan.min_rows,
            costs=item.costs,
            out_dir=scratch / "unused",
            log_dir=scratch / "unused",
            engine_log=scratch / "unused",
            trainer=plan.trainer,
            params=item.params if item.params is not None else plan.params,
            seed=item.seed,
            device=plan.device,
            threads=plan.threads,
            log_level=plan.log_level,
            item_id=item.item_id,
            data_format=plan.data_format,
            keep_features=plan.keep_features,
            window=item.window,
        )
        request = NodeAttempt(
            spec=spec,
            limits=AttemptLimits(plan.timeout_s, plan.kill_grace_s, plan.memory_cap_mb),
            preload=plan.preload,
            scratch=str(scratch),
            data_sha256=item.data_sha256,
            champion_payload=champion,  # the node unpacks it and sets champion_dir
        )
        result = run_on_node(
            request,
            data,
            node=self.node,
            node_key=f"batch-{item.index}",
            should_stop=lambda: stop.requested,
        )
        return Outcome.from_dict(result.outcome), result.payload

    def _fetch_data(self, scratch: Path) -> bytes:
        target = scratch / "data.download"
        self.storage.get_file(self.item.data_key, target)
        data = target.read_bytes()
        if sha256_bytes(data) != self.item.data_sha256:
            raise OSError(f"{self.item.data_key} does not match its sha256")
        return data

    def _fetch_champion(self, scratch: Path) -> bytes | None:
        """The champion's model files, checked against their sha256. One that cannot be
        had is not this attempt's failure: the gate then compares the metrics each model
        reported (its decision's basis says "reported"), as for a trainer without the
        hook."""
        key, sha = self.item.champion_key, self.item.champion_sha256
        if key is None or sha is None:
            return None
        target = scratch / "champion.download"
        try:
            self.storage.get_file(key, target)
            payload = target.read_bytes()
        except (UploadError, OSError) as exc:
            self.log.warning("batch_champion_not_fetched", key=key, reason=str(exc))
            return None
        if sha256_bytes(payload) != sha:
            self.log.warning("batch_champion_not_fetched", key=key, reason="sha256 mismatch")
            return None
        return payload

    def _put_folder(self, scratch: Path, payload: bytes | None) -> tuple[str | None, str | None]:
        if payload is None:
            return None, None
        tar = scratch / "attempt.tar"
        atomic_write_bytes(tar, payload, durable=False)
        key = self.plan.tar_key(self.item.item_id, self.attempt)
        try:
            result = self.storage.put_file(tar, key)
        except UploadError as exc:
            self.log.error("batch_folder_not_stored", reason=str(exc))
            return None, None
        return key, result.sha256


def _attempt_number(
    environ: dict[str, str], storage: StorageClient, plan: BatchPlan, item: BatchItem
) -> int:
    """Batch's own number; without it (a child run by hand), the next after the records."""
    given = environ.get(ATTEMPT_ENV, "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    folder = plan.record_folder(item.item_id)
    try:
        keys = storage.list_keys(folder)
    except UploadError:
        keys = []
    # Only this item's: "BTC"'s folder holds "BTC/c03"'s records too, one level down.
    numbers = [attempt_of(k) for k in keys if k.rpartition("/")[0] == folder]
    return max([n for n in numbers if n is not None], default=0) + 1


def _storage(location: Location) -> S3Storage:
    return S3Storage(
        S3Options(
            bucket=location.bucket,
            prefix=location.prefix,
            region=location.region,
            endpoint_url=location.endpoint_url,
            addressing_style=location.addressing_style,
        )
    )


def _read_json(storage: StorageClient, key: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="retrainer-plan-") as folder:
        path = Path(folder) / "plan.json"
        storage.get_file(key, path)
        raw = json.loads(path.read_text("utf-8"))
    if not isinstance(raw, dict):
        raise ValueError("the plan is not a JSON object")
    return raw


def _split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3:// URI of an object: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key
