"""`retrainer batch status [--watch]`: the day's submitted night as Batch and the bucket
tell it, polled with jitter until the job ends when watched; once it has ended, its
night is assembled under the root (once: the day's pointer remembers it).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from retrainer.base.artifacts import Layout
from retrainer.base.config import Settings
from retrainer.base.errors import BadInputError
from retrainer.base.exitcodes import ExitCode
from retrainer.job.batch.assemble import assemble_night
from retrainer.job.batch.batchplan import BatchPlan
from retrainer.job.batch.client import BatchClient
from retrainer.job.batch.status import (
    JobState,
    NightCounts,
    count,
    job_state,
    read_plan,
    read_records,
    with_attempts,
)
from retrainer.job.batch.submit import check_settings, read_pointer, write_pointer
from retrainer.job.nightly import NightReporter
from retrainer.mirror.storage.registry import make_storage

JITTER = 0.2  # each wait is poll_s ± 20 %: many watchers never ask Batch in lock step


@dataclass(frozen=True)
class Seen:
    """One look at the night."""

    plan: BatchPlan
    job: JobState
    counts: NightCounts

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job.job_id,
            "job_name": self.plan.job_name,
            "job_status": self.job.status,
            "job_status_reason": self.job.status_reason,
            "children": self.job.child_counts,
            **self.counts.to_dict(),
        }


def poll_delay_s(poll_s: float, rng: random.Random) -> float:
    return poll_s * rng.uniform(1.0 - JITTER, 1.0 + JITTER)


def watch_night(
    settings: Settings,
    day: str,
    *,
    watch: bool,
    reporter: NightReporter,
    show: Callable[[Seen], None],
    sleep: Callable[[float], None] = time.sleep,
    client: BatchClient | None = None,
) -> ExitCode:
    check_settings(settings, need_submit=False)
    run_dir = Layout(settings.run.root.resolve()).run_dir(day)
    pointer = read_pointer(run_dir)
    if pointer is None or not pointer.get("job_id") or not pointer.get("folder"):
        raise BadInputError(f"no Batch submission for {day} under {run_dir.parent.parent}")
    storage = make_storage(settings.storage)
    assert storage is not None
    plan = read_plan(storage, str(pointer["folder"]))
    client = client or BatchClient(settings.batch)
    rng = random.Random()
    while True:
        job = job_state(client, str(pointer["job_id"]))
        records = read_records(storage, plan)
        show(Seen(plan, job, count(plan, records)))
        if job.ended or not watch:
            break
        sleep(poll_delay_s(settings.batch.poll_s, rng))
    if not job.ended:
        return ExitCode.OK
    if pointer.get("assembled"):  # the ledger and summary are there: `status` shows them
        return ExitCode(int(pointer.get("exit_code", ExitCode.OK)))
    job = with_attempts(client, job)  # every attempt, recorded or not, as Batch tells it
    code = assemble_night(settings, plan, job, records, storage, reporter)
    write_pointer(run_dir, {**pointer, "assembled": True, "exit_code": int(code)})
    return code
