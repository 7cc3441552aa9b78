"""The plan as the bucket holds it: one record per array index, what its child needs.

A submission lives in one folder of the bucket (under [storage] prefix):

    runs/<day>/batch/data/<sha256>/<file>                      each symbol's data, once
    runs/<day>/batch/champions/<sha256>.tar                    each champion, once
    runs/<day>/batch/<job name>/<submission>/plan.json         this file
    .../<submission>/attempts/<item id>/attempt-<n>.tar        an attempt's folder, packed
    .../<submission>/records/<item id>/attempt-<n>.json        its record (written last)

Every key in plan.json is relative to [storage] prefix, so that the child needs only the
bucket's location to find everything.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

PLAN_NAME = "plan.json"
VERSION = 1


def batch_folder(day: str) -> str:
    return f"runs/{day}/batch"


def data_key(day: str, sha256: str, name: str) -> str:
    return f"{batch_folder(day)}/data/{sha256}/{name}"


def champion_key(day: str, sha256: str) -> str:
    """A champion's model files, packed, once per content."""
    return f"{batch_folder(day)}/champions/{sha256}.tar"


def job_name(root_id: str, day: str, plan_hash: str) -> str:
    """Deterministic for the night: the same root, day and plan give the same name, which
    is how a second `submit` finds the job (Batch: 128 letters, digits, - and _)."""
    return f"retrainer-{day}-{root_id[:10]}-{plan_hash[:16]}"


def root_id(root: str) -> str:
    return hashlib.sha256(root.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class BatchItem:
    """One array index: the item, its data in the bucket, what its attempt is given."""

    index: int
    item_id: str
    symbol: str
    data_key: str
    data_name: str
    data_sha256: str
    costs: dict[str, Any]
    seed: int
    why: str = ""
    # The symbol's champion for the gate to compare with ([promote] mode = "gated"): its
    # model files packed in the bucket, scored by the attempt on its own test span.
    champion_key: str | None = None
    champion_sha256: str | None = None
    champion_dir: str | None = None  # its folder under the root, as the pointer names it
    # A search candidate's own trainer parameters (None: the plan's); a backtest window.
    params: dict[str, Any] | None = None
    window: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BatchItem:
        return cls(**raw)


@dataclass(frozen=True)
class Location:
    """Where the bucket is (no credential: the job role or the standard chain has them)."""

    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    addressing_style: str = "auto"


@dataclass(frozen=True)
class BatchPlan:
    run_id: str
    day: str
    root: str
    job_name: str
    folder: str  # the submission's folder, relative to the prefix
    plan_hash: str
    submitted_at: str
    force: bool
    location: Location
    trainer: str
    params: dict[str, Any]
    min_rows: int
    data_format: dict[str, Any]
    threads: int
    log_level: str
    keep_features: bool
    timeout_s: float
    kill_grace_s: float
    memory_cap_mb: int | None
    retries: int
    preload: tuple[str, ...]
    items: tuple[BatchItem, ...] = ()
    device: str = "cpu"  # "cuda:0" when the job definition asks for GPUs
    version: int = VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def plan_key(self) -> str:
        return f"{self.folder}/{PLAN_NAME}"

    def tar_key(self, item_id: str, attempt: int) -> str:
        return f"{self.folder}/attempts/{item_id}/attempt-{attempt}.tar"

    def record_folder(self, item_id: str) -> str:
        return f"{self.folder}/records/{item_id}"

    def record_key(self, item_id: str, attempt: int) -> str:
        return f"{self.record_folder(item_id)}/attempt-{attempt}.json"

    def uri(self) -> str:
        prefix = self.location.prefix.strip("/")
        return f"s3://{self.location.bucket}/{prefix + '/' if prefix else ''}{self.plan_key}"

    def to_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        raw["preload"] = list(self.preload)
        return raw

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> BatchPlan:
        if raw.get("version") != VERSION:
            raise ValueError(f"plan version {raw.get('version')!r} is not {VERSION}")
        return cls(
            **{
                **raw,
                "location": Location(**raw["location"]),
                "preload": tuple(raw["preload"]),
                "items": tuple(BatchItem.from_dict(i) for i in raw["items"]),
            }
        )


def plan_hash(items: list[BatchItem], settings: dict[str, Any]) -> str:
    """The night's content: items, their data by value, the trainer's settings and limits.
    The same night planned twice gives the same hash (no time, no run id in it)."""
    content = {"items": [asdict(i) for i in items], **settings}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
