"""A night opens, runs and closes: whatever the loop does, what was opened is closed and
the summary says how the night ended."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog

from retrainer.base.clock import now_utc
from retrainer.base.config import load_settings
from retrainer.base.logs import close_logging
from retrainer.base.resources import Resources, detect_resources
from retrainer.engine.attempt import AttemptSpec
from retrainer.engine.drivers.protocol import AttemptHandle
from retrainer.engine.supervisor import AttemptLimits
from retrainer.job.nightly import Night
from retrainer.ledger.journal import Ledger, read_ledger
from retrainer.plan.planner import Plan, build_plan
from retrainer.training.contract import load_trainer
from tests.conftest import read_json, write_config


class DriverThatBreaks:
    """A driver with a bug: its submit raises what no driver is allowed to raise."""

    def start(self) -> None: ...

    def keep_warm(self, count: int, wait_s: float = 0.0) -> bool:
        return True

    def submit(self, spec: AttemptSpec, limits: AttemptLimits) -> AttemptHandle:
        raise RuntimeError("the driver broke")

    def wait(self, running: Sequence[AttemptHandle], timeout_s: float) -> None: ...

    def resources(self) -> Resources | None:
        return None

    def helper_pids(self) -> Collection[int]:
        return ()

    def close(self) -> None: ...


class Quiet:
    """A NightReporter that shows nothing."""

    def plan(self, plan: Plan, dry_run: bool) -> None: ...

    @contextlib.contextmanager
    def progress(
        self, ledger: Ledger, run: Mapping[str, Any], day: str, engine_log: Path, log_level: str
    ) -> Iterator[None]:
        yield

    def result(self, summary: dict[str, Any], summary_path: Path) -> None: ...


@pytest.fixture
def plan_of_two(tmp_path: Path, small_data: Path) -> tuple[Any, Plan]:
    symbols = sorted(p.stem for p in small_data.glob("*.parquet"))[:2]
    config = write_config(
        tmp_path / "retrainer.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": ",".join(symbols)},
            "data": {"path": str(small_data)},
            "trainer": {
                "plugin": "tests.support.plugins:faulty",
                "params": {
                    "pid_dir": str(tmp_path / "pids"),
                    "behaviours": dict.fromkeys(symbols, "ok"),
                },
            },
        },
    )
    settings = load_settings(config, {})
    trainer = load_trainer(settings.trainer.plugin)
    return settings, build_plan(settings, trainer, detect_resources(), now_utc(), force=False)


def test_a_night_whose_loop_raises_still_writes_its_summary_and_closes_what_it_opened(
    plan_of_two: tuple[Any, Plan],
) -> None:
    settings, plan = plan_of_two
    threads_before = set(threading.enumerate())
    logging_before = structlog.get_config()
    try:
        with pytest.raises(RuntimeError, match="the driver broke"):
            Night(settings, plan, DriverThatBreaks(), "test-run", False, Quiet()).run()
    finally:  # the night configured this process's logging: put it back for other tests
        close_logging()
        structlog.contextvars.clear_contextvars()
        structlog.configure(**logging_before)
    layout = plan.layout
    summary = read_json(layout.summary_path(plan.day))
    assert summary["exit_code"] == 70
    assert summary["total_symbols"] == 2
    recorded = read_ledger(layout.status_path(plan.day), layout.journal_path(plan.day))
    assert recorded.runs["test-run"]["exit_code"] == 70
    assert "finished_at" in recorded.runs["test-run"]
    # The fsync thread and the notifier's are gone: nothing the night opened lives on.
    assert [t for t in threading.enumerate() if t not in threads_before and t.is_alive()] == []
