"""The local driver's processes, driven directly: one fresh process per attempt, forked
ahead of need, with nothing left running beside the item and nothing left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from retrainer.base.clock import now_utc, run_day
from retrainer.base.costs import SymbolCosts
from retrainer.base.resources import usable_cpu_count
from retrainer.engine.attempt import AttemptSpec
from retrainer.engine.drivers.local import LocalDriver
from retrainer.engine.supervisor import AttemptLimits, Supervisor
from retrainer.ledger.entries import ItemState, Outcome
from tests.conftest import RunCli, cli_env, read_json
from tests.support.processes import assert_all_dead
from tests.test_item_faults import faulty_config, symbols_of

LIMITS = AttemptLimits(timeout_s=60, kill_grace_s=1)


@pytest.fixture(scope="module")
def driver() -> Iterator[LocalDriver]:
    # numpy in the forkserver, as with any real trainer: its OpenBLAS comes preloaded.
    local = LocalDriver(["tests.support.plugins", "numpy"])
    local.start()
    yield local
    local.close()


def spec_for(tmp_path: Path, behaviour: str, threads: int = 1, attempt: int = 1) -> AttemptSpec:
    symbol = "SYM"
    out_dir = tmp_path / "out" / f"{attempt}"
    out_dir.mkdir(parents=True)
    return AttemptSpec(
        run_id="test",
        symbol=symbol,
        attempt=attempt,
        data_path=tmp_path / "none.parquet",
        min_rows=1,
        costs=SymbolCosts(symbol, 10.0, 2.0, 1.0, 100).to_dict(),
        out_dir=out_dir,
        log_dir=tmp_path / "logs",
        engine_log=tmp_path / "engine.log",
        trainer="tests.support.plugins:faulty",
        params={"pid_dir": str(tmp_path / "pids"), "behaviours": {symbol: behaviour}},
        seed=1,
        device="cpu",
        threads=threads,
    )


def run_to_end(driver: LocalDriver, supervisor: Supervisor) -> Outcome:
    while not supervisor.outcome_ready():
        driver.wait([supervisor], 1.0)
    return supervisor.outcome()


def test_an_item_given_one_thread_runs_without_a_blas_pool_beside_it(
    driver: LocalDriver, tmp_path: Path
) -> None:
    outcome = run_to_end(driver, driver.submit(spec_for(tmp_path, "threads"), LIMITS))
    assert outcome.state is ItemState.SUCCESS, outcome.reason
    assert outcome.metrics is not None
    # Its main thread and the lifeline watcher; no OpenBLAS thread spinning on a core.
    assert outcome.metrics["os_threads"] == 2
    assert outcome.metrics["blas_threads"] == 1


def test_an_item_given_two_threads_gets_them_from_its_blas(
    driver: LocalDriver, tmp_path: Path
) -> None:
    outcome = run_to_end(driver, driver.submit(spec_for(tmp_path, "threads", threads=2), LIMITS))
    assert outcome.metrics is not None and outcome.metrics["blas_threads"] == 2


def warm_pids(driver: LocalDriver, count: int) -> list[int]:
    assert driver.keep_warm(count, wait_s=60)
    return driver.warm_pids()


def test_each_attempt_gets_a_fresh_process_forked_before_it_was_needed(
    driver: LocalDriver, tmp_path: Path
) -> None:
    waiting = warm_pids(driver, 2)
    assert len(waiting) == 2
    first = driver.submit(spec_for(tmp_path, "ok", attempt=1), LIMITS)
    second = driver.submit(spec_for(tmp_path, "ok", attempt=2), LIMITS)
    assert {first.pid, second.pid} == set(waiting)
    for supervisor in (first, second):
        assert run_to_end(driver, supervisor).state is ItemState.SUCCESS
    third = driver.submit(spec_for(tmp_path, "ok", attempt=3), LIMITS)
    assert third.pid not in waiting  # never a process that already ran an attempt
    assert run_to_end(driver, third).state is ItemState.SUCCESS
    driver.keep_warm(0)


def test_a_warm_process_killed_while_it_waited_is_replaced_and_the_attempt_runs(
    driver: LocalDriver, tmp_path: Path
) -> None:
    (victim,) = warm_pids(driver, 1)
    os.kill(victim, signal.SIGKILL)
    assert_all_dead([victim])
    supervisor = driver.submit(spec_for(tmp_path, "ok"), LIMITS)
    assert supervisor.pid != victim
    assert run_to_end(driver, supervisor).state is ItemState.SUCCESS


def test_warm_processes_beyond_the_count_and_at_close_end_without_running_anything(
    tmp_path: Path,
) -> None:
    # A second driver on the same forkserver, closed by the test itself.
    local = LocalDriver(["tests.support.plugins", "numpy"])
    local.start()
    kept: list[int] = []
    try:
        waiting = warm_pids(local, 3)
        local.keep_warm(1)
        kept = warm_pids(local, 1)
        assert_all_dead([p for p in waiting if p not in kept])
    finally:
        local.close()
    assert kept and set(kept) <= set(waiting)
    assert_all_dead(kept)
    assert not (tmp_path / "pids").exists()  # none of them ran a trainer


def test_a_run_sizes_the_forkservers_blas_for_its_items_so_none_is_rebuilt_at_start(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    # Whatever the machine's cores, two at a time: each item's budget is cores // 2.
    symbols = symbols_of(small_data)[:2]
    config = faulty_config(
        tmp_path, small_data, dict.fromkeys(symbols, "threads"), max_concurrent=2
    )
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 0, result.stderr
    status = read_json(tmp_path / "root" / "runs" / run_day(now_utc()) / "status.json")
    for symbol in symbols:
        metrics = status["symbols"][symbol]["metrics"]
        assert metrics["budget"] == max(1, usable_cpu_count() // 2)
        assert metrics["blas_threads"] == metrics["budget"]
        assert metrics["os_threads"] == 2  # no pool built, and spinning, before first use


@pytest.mark.parametrize("launcher", ["python -m retrainer", "console script"])
def test_attempts_never_load_the_cli_however_retrainer_was_started(
    launcher: str, tmp_path: Path, small_data: Path
) -> None:
    # However retrainer was started, an attempt (forked by the zygote) never loads the CLI.
    symbol = symbols_of(small_data)[0]
    config = faulty_config(tmp_path, small_data, {symbol: "modules"})
    command = (
        [sys.executable, "-m", "retrainer"]
        if launcher == "python -m retrainer"
        else [str(Path(sys.executable).parent / "retrainer")]
    )
    done = subprocess.run(
        [*command, "run", "--config", str(config)],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    status = read_json(tmp_path / "root" / "runs" / run_day(now_utc()) / "status.json")
    assert status["symbols"][symbol]["metrics"] == {
        "retrainer.cli.app": False,
        "typer": False,
        "pydantic": False,
    }
