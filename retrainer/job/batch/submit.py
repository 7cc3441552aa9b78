"""`retrainer batch submit`: the night planned as `run` plans it, put in the bucket, and
submitted as one array job, or found already submitted (the name is the night's).

Nothing is submitted unless the queue, the job definition, the credentials and the bucket
are all there: a missing one is bad input (exit 2), named.
"""

from __future__ import annotations

import math
import os
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import (
    atomic_write_json,
    read_json_object,
    sha256_bytes,
    sha256_file,
)
from retrainer.base.clock import attempt_stamp, iso, now_utc
from retrainer.base.config import BatchSettings, Settings
from retrainer.base.errors import BadInputError
from retrainer.base.resources import Resources
from retrainer.engine.drivers.shipping import pack_champion
from retrainer.job.batch.batchplan import (
    BatchItem,
    BatchPlan,
    Location,
    batch_folder,
    champion_key,
    data_key,
    job_name,
    plan_hash,
    root_id,
)
from retrainer.job.batch.client import BatchClient
from retrainer.job.batch.request import submit_request
from retrainer.job.nightly import DEFAULT_PRELOAD, check_search_before_anything
from retrainer.mirror.storage.protocol import StorageClient, UploadError
from retrainer.mirror.storage.registry import make_storage
from retrainer.plan.planner import Plan, build_plan
from retrainer.training.contract import Trainer, load_trainer

# The share of the container's memory an attempt's tree may hold: the child and the
# zygote live beside it.
MEMORY_SHARE = 0.85
POINTER_NAME = "batch.json"  # runs/<day>/batch.json: the day's latest submission


@dataclass(frozen=True)
class Submission:
    """What `submit` did: the plan, and the job it submitted or attached to."""

    night: Plan
    plan: BatchPlan | None  # None: nothing to run
    request: dict[str, Any] = field(default_factory=dict)
    job_id: str | None = None
    attached: bool = False  # the night's job was already there: nothing submitted

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "job_name": self.plan.job_name if self.plan else None,
            "plan": self.plan.uri() if self.plan else None,
            "folder": self.plan.folder if self.plan else None,
            "submitted_at": self.plan.submitted_at if self.plan else None,
            "items": len(self.plan.items) if self.plan else 0,
            "attached": self.attached,
        }


ClientFactory = Callable[[BatchSettings], BatchClient]


def submit_night(
    settings: Settings,
    *,
    force: bool,
    dry_run: bool,
    now: datetime | None = None,
    client_factory: ClientFactory = BatchClient,
) -> Submission:
    check_settings(settings, need_submit=not dry_run)
    check_search_before_anything(settings)  # as `run`: bad input before anything is written
    now = now or now_utc()
    trainer = load_trainer(settings.trainer.plugin, settings.trainer.paths)
    night = build_plan(settings, trainer, batch_resources(settings.batch), now, force)
    if not night.to_run:
        return Submission(night, None)
    champions = champion_payloads(night)
    plan = batch_plan(settings, night, trainer, now, force, champions)
    request = submit_request(settings.batch, plan)
    if dry_run:  # the plan and the request, printed; nothing written, nothing asked
        return Submission(night, plan, request)
    client = client_factory(settings.batch)
    queue, definition = settings.batch.job_queue or "", settings.batch.job_definition or ""
    if not client.queue_exists(queue):
        raise BadInputError(f"[batch] job_queue {queue!r}: no such job queue (or disabled)")
    if not client.definition_exists(definition):
        raise BadInputError(
            f"[batch] job_definition {definition!r}: no such active job definition "
            "(`retrainer batch definition --register` registers one)"
        )
    storage = make_storage(settings.storage)
    assert storage is not None  # check_settings: s3
    _check_bucket(storage, night.day)
    existing = client.jobs_named(queue, plan.job_name)
    if existing and not force:
        attached = _attach(client, night, plan, existing[0])
        write_pointer(night.layout.run_dir(night.day), attached.to_dict())
        return attached
    _put_data(storage, night, plan)
    _put_champions(storage, plan, champions)
    storage.put_json(plan.to_dict(), plan.plan_key)
    job = client.submit(request)
    submitted = Submission(night, plan, request, str(job["jobId"]))
    write_pointer(night.layout.run_dir(night.day), submitted.to_dict())
    return submitted


def check_settings(settings: Settings, need_submit: bool = True) -> None:
    """Bad input before anything is planned: one message each."""
    if settings.storage.kind != "s3":
        raise BadInputError(
            'a night on Batch needs [storage] kind = "s3": the children read their data '
            "and leave their folders there"
        )
    if need_submit and not settings.batch.job_queue:
        raise BadInputError("[batch] job_queue is missing: the queue the night is submitted to")
    if need_submit and not settings.batch.job_definition:
        raise BadInputError(
            "[batch] job_definition is missing (`retrainer batch definition` prints one)"
        )


def batch_resources(batch: BatchSettings) -> Resources:
    """Each item gets a container of its own: the definition's vCPUs, memory and GPUs."""
    cores = max(1, math.floor(batch.vcpus))
    return Resources(
        cpu_count=cores,
        gpu_count=batch.gpus,
        memory_mb=batch.memory_mb,
        cuda_visible_devices=None,
        item_slots=10_000,  # Batch runs as many at once as the compute environment allows
        item_threads=cores,
        item_memory_mb=int(batch.memory_mb * MEMORY_SHARE),
    )


def champion_payloads(night: Plan) -> dict[str, tuple[bytes, str]]:
    """Each runnable item's champion, packed as a Ray or Dask node gets it (model files,
    no features), by item id, with its sha256: what the attempt scores for the gate on its
    own test span (`[promote] mode = "gated"` only, as the local engine does). A folder
    shared by several items is packed once."""
    if night.policy.promote != "gated":
        return {}
    packed: dict[Path, tuple[bytes, str]] = {}
    out: dict[str, tuple[bytes, str]] = {}
    for item in night.to_run:
        if item.champion is None:
            continue
        folder = item.champion.folder(night.layout.root)
        if folder not in packed:
            if not folder.is_dir():  # the gate says so when it judges (champion_problems)
                continue
            payload = pack_champion(folder)
            packed[folder] = (payload, sha256_bytes(payload))
        out[item.item_id] = packed[folder]
    return out


def batch_plan(
    settings: Settings,
    night: Plan,
    trainer: Trainer,
    now: datetime,
    force: bool,
    champions: dict[str, tuple[bytes, str]] | None = None,
) -> BatchPlan:
    policy = night.policy
    champions = champions or {}
    items = []
    for index, item in enumerate(night.to_run):
        sha = sha256_file(item.data_path)
        champion_sha = champions[item.item_id][1] if item.item_id in champions else None
        items.append(
            BatchItem(
                index=index,
                item_id=item.item_id,
                symbol=item.symbol,
                data_key=data_key(night.day, sha, item.data_path.name),
                data_name=item.data_path.name,
                data_sha256=sha,
                costs=item.costs.to_dict() if item.costs else {},
                seed=item.seed,
                why=item.why,
                champion_key=champion_key(night.day, champion_sha) if champion_sha else None,
                champion_sha256=champion_sha,
                params=dict(item.params) if item.params is not None else None,
                window=item.window.to_dict() if item.window is not None else None,
                champion_dir=item.champion.artifact_dir if champion_sha and item.champion else None,
            )
        )
    content = {
        "trainer": night.trainer,
        "params": night.trainer_params,
        "min_rows": night.min_rows,
        "data_format": night.data_format.to_dict(),
        "timeout_s": policy.timeout_s,
        "memory_cap_mb": policy.memory_cap_mb,
        "retries": policy.retries,
        "force": force,
    }
    digest = plan_hash(items, content)
    root = str(night.layout.root)
    name = job_name(root_id(root), night.day, digest)
    # A forced second submission gets a folder of its own: its records never mix.
    submission = f"{attempt_stamp(now)}-{uuid.uuid4().hex[:6]}"
    storage = settings.storage
    assert storage.bucket is not None
    return BatchPlan(
        run_id=f"{attempt_stamp(now)}-{os.getpid()}",
        day=night.day,
        root=root,
        job_name=name,
        folder=f"{batch_folder(night.day)}/{name}/{submission}",
        plan_hash=digest,
        submitted_at=iso(now),
        force=force,
        location=Location(
            storage.bucket,
            storage.prefix,
            storage.region or settings.batch.region,
            storage.endpoint_url,
            storage.addressing_style,
        ),
        trainer=night.trainer,
        params=night.trainer_params,
        min_rows=night.min_rows,
        data_format=night.data_format.to_dict(),
        threads=policy.threads_per_item,
        log_level=settings.logging.level,
        keep_features=policy.keep_features,
        timeout_s=policy.timeout_s,
        kill_grace_s=policy.kill_grace_s,
        memory_cap_mb=policy.memory_cap_mb,
        retries=policy.retries,
        preload=_preload(settings, trainer),
        items=tuple(items),
        device="cuda:0" if settings.batch.gpus else "cpu",
    )


def _preload(settings: Settings, trainer: Trainer) -> tuple[str, ...]:
    module = settings.trainer.plugin.partition(":")[0]
    return (module, *getattr(trainer, "preload_modules", DEFAULT_PRELOAD))


def _check_bucket(storage: StorageClient, day: str) -> None:
    try:
        storage.list_keys(batch_folder(day))
    except UploadError as exc:
        raise BadInputError(f"[storage] bucket cannot be used: {exc.reason}") from None


def _put_data(storage: StorageClient, night: Plan, plan: BatchPlan) -> None:
    """Each data file once, named by its sha256 (a retry or a second night with the same
    bars finds it there: put_file skips an object that has the same sha256)."""
    paths = {i.item_id: i.data_path for i in night.to_run}
    for item in plan.items:
        storage.put_file(paths[item.item_id], item.data_key)


def _put_champions(
    storage: StorageClient, plan: BatchPlan, champions: dict[str, tuple[bytes, str]]
) -> None:
    """Each champion once, named by its sha256 (put_file skips one already there)."""
    stored: set[str] = set()
    with tempfile.TemporaryDirectory(prefix="retrainer-champion-") as scratch:
        for item in plan.items:
            if item.champion_key is None or item.champion_key in stored:
                continue
            tar = Path(scratch) / f"{len(stored)}.tar"
            tar.write_bytes(champions[item.item_id][0])
            storage.put_file(tar, item.champion_key)
            stored.add(item.champion_key)


def _attach(client: BatchClient, night: Plan, plan: BatchPlan, job: dict[str, Any]) -> Submission:
    """The night's job is there: the folder it reads is in its tags."""
    described = client.describe([str(job["jobId"])])
    tags = described[0].get("tags", {}) if described else {}
    folder = str(tags.get("retrainer:plan", plan.folder))
    return Submission(night, replace(plan, folder=folder), {}, str(job["jobId"]), attached=True)


def write_pointer(run_dir: Path, record: dict[str, Any]) -> Path:
    """runs/<day>/batch.json: the day's submission, which `batch status` reads."""
    path = run_dir / POINTER_NAME
    atomic_write_json(path, {"day": run_dir.name, **record})
    return path


def read_pointer(run_dir: Path) -> dict[str, Any] | None:
    return read_json_object(run_dir / POINTER_NAME)
