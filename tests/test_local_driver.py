"""The local driver's processes, driven directly: one fresh process per attempt, forked
ahead of need, with nothing left running beside the item and nothing left behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from retrainer.costs import SymbolCosts
from retrainer.scheduler.drivers.local import LocalDriver
from retrainer.scheduler.items import ItemState, Outcome
from retrainer.scheduler.supervisor import AttemptLimits, Supervisor
from retrainer.scheduler.worker import AttemptSpec

LIMITS = AttemptLimits(timeout_s=60, kill_grace_s=1)


@pytest.fixture(scope="module")
def driver() -> Iterator[LocalDriver]:
    # numpy in the forkserver, as with any real trainer: its OpenBLAS comes preloaded.
    local = LocalDriver(["tests.plugins", "numpy"])
    local.start()
    yield local
    local.close()


def spec_for(tmp_path: Path, behaviour: str, threads: int = 1, attempt: int = 1) -> AttemptSpec:
    symbol = "SYM"
    out_dir = tmp_path / "out" / f"{attempt}"
    out_dir.mkdir(parents=True)
    return AttemptSpec(
        run_id="test", symbol=symbol, attempt=attempt, data_path=tmp_path / "none.parquet",
        min_rows=1, costs=SymbolCosts(symbol, 10.0, 2.0, 1.0, 100).to_dict(),
        out_dir=out_dir, log_dir=tmp_path / "logs", engine_log=tmp_path / "engine.log",
        trainer="tests.plugins:faulty",
        params={"pid_dir": str(tmp_path / "pids"), "behaviours": {symbol: behaviour}},
        seed=1, device="cpu", threads=threads)


def run_to_end(driver: LocalDriver, supervisor: Supervisor) -> Outcome:
    while not supervisor.is_done():
        driver.wait([supervisor], 1.0)
    return supervisor.reap()


def test_an_item_given_one_thread_runs_without_a_blas_pool_beside_it(
        driver: LocalDriver, tmp_path: Path) -> None:
    outcome = run_to_end(driver, driver.submit(spec_for(tmp_path, "threads"), LIMITS))
    assert outcome.state is ItemState.SUCCESS, outcome.reason
    assert outcome.metrics is not None
    # Its main thread and the lifeline watcher; no OpenBLAS thread spinning on a core.
    assert outcome.metrics["os_threads"] == 2
    assert outcome.metrics["blas_threads"] == 1


def test_an_item_given_two_threads_gets_them_from_its_blas(
        driver: LocalDriver, tmp_path: Path) -> None:
    outcome = run_to_end(driver, driver.submit(spec_for(tmp_path, "threads", threads=2),
                                               LIMITS))
    assert outcome.metrics is not None and outcome.metrics["blas_threads"] == 2
