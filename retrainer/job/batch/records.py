"""An item's record: one object per item and attempt, written by its child as the last
thing it does, so that a record in the bucket means its attempt's folder is there too.

No shared ledger file in the bucket: children never race on one object; `batch status`
builds the night's ledger from the records.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from retrainer.ledger.entries import Outcome


@dataclass(frozen=True)
class ItemRecord:
    item_id: str
    index: int
    attempt: int
    outcome: dict[str, Any]  # ledger.entries.Outcome.to_dict()
    started_at: str
    ended_at: str
    seconds: float
    exit_code: int  # what the container exits with (exits.exit_code_for)
    tar_key: str | None  # the packed attempt folder; None when none could be stored
    tar_sha256: str | None
    node: str | None = None
    batch_job_id: str | None = None
    threads: int = 1
    device: str = "cpu"

    @property
    def result(self) -> Outcome:
        return Outcome.from_dict(self.outcome)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ItemRecord:
        return cls(**raw)


def attempt_of(key: str) -> int | None:
    """The attempt number of a record's key (".../attempt-3.json" → 3)."""
    name = key.rsplit("/", 1)[-1]
    if not (name.startswith("attempt-") and name.endswith(".json")):
        return None
    number = name[len("attempt-") : -len(".json")]
    return int(number) if number.isdigit() else None
