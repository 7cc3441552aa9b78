"""Chaos: the scheduler is killed with SIGKILL at a random moment, then run again.

Whatever the moment, nothing it started survives, its ledger stays readable, and the
rerun finishes every symbol exactly once without training again one that was done.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import time
from pathlib import Path

import psutil
import pytest

from retrainer.base.artifacts import Layout, verify_manifest
from retrainer.base.clock import now_utc, run_day
from retrainer.ledger.journal import read_ledger
from tests.conftest import RunCli
from tests.support.processes import assert_all_dead, recorded_pids, wait_for_pids
from tests.test_item_faults import faulty_config, start_scheduler, symbols_of

ITERATIONS = 20


def assert_journal_readable(journal: Path) -> None:
    """Every line is JSON, except perhaps a last one torn by the kill."""
    if not journal.exists():
        return
    lines = journal.read_text("utf-8").splitlines()
    for line in lines[:-1]:
        json.loads(line)


@pytest.mark.parametrize("seed", range(ITERATIONS))
def test_a_scheduler_killed_at_a_random_moment_loses_and_redoes_nothing(
    tmp_path: Path, small_data: Path, run_cli: RunCli, seed: int
) -> None:
    names = symbols_of(small_data)
    config = faulty_config(
        tmp_path,
        small_data,
        dict.fromkeys(names, "slow"),
        slow_s=0.3,
        max_concurrent=2,
        mode="hybrid",
        timeout_minutes=5,
    )
    layout, day = Layout(tmp_path / "root"), run_day(now_utc())
    # Seeded moments spread over the whole run: during start-up (the forkserver imports
    # torch), or just after the n-th item started, anywhere in its life or its recording.
    rng = random.Random(seed)
    started_items = rng.randrange(len(names) + 1)
    scheduler = start_scheduler(config, tmp_path)
    if started_items == 0:
        time.sleep(rng.uniform(0.1, 1.5))
    else:
        wait_for_pids(tmp_path, started_items)
        time.sleep(rng.uniform(0.0, 0.4))
    scheduler.send_signal(signal.SIGKILL)
    scheduler.communicate()

    assert_all_dead(recorded_pids(tmp_path))
    assert_journal_readable(layout.journal_path(day))
    before = read_ledger(layout.status_path(day), layout.journal_path(day)).entries
    done_before = {s: e for s, e in before.items() if e.state.value == "success"}

    assert run_cli("run", "--config", str(config)).returncode == 0
    after = read_ledger(layout.status_path(day), layout.journal_path(day)).entries
    assert {s: e.state.value for s, e in after.items()} == dict.fromkeys(names, "success")
    for symbol, entry in done_before.items():  # finished before the kill: not retrained
        assert after[symbol].attempts == entry.attempts
        assert after[symbol].artifact_dir == entry.artifact_dir
    for symbol in names:  # one finished set of artifacts each: the one the ledger names
        finished = [
            d for d in (layout.root / "models" / symbol).iterdir() if (d / "sha256.txt").exists()
        ]
        assert [layout.relative(d) for d in finished] == [after[symbol].artifact_dir]
        assert verify_manifest(finished[0], after[symbol].manifest_sha256) == []
    assert_all_dead(recorded_pids(tmp_path))


def _zygote_of(scheduler_pid: int, within_s: float = 60) -> psutil.Process:
    """The scheduler's zygote, as soon as it exists (it then imports torch for seconds)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(scheduler_pid).children():
                if "drivers.zygote import serve" in " ".join(child.cmdline()):
                    return child
        time.sleep(0.01)
    raise AssertionError("the scheduler started no zygote")


@pytest.mark.parametrize("delay_s", [0.0, 0.3, 1.0])
def test_a_zygote_still_importing_torch_dies_with_its_sigkilled_scheduler(
    tmp_path: Path, small_data: Path, delay_s: float
) -> None:
    names = symbols_of(small_data)
    config = faulty_config(tmp_path, small_data, dict.fromkeys(names, "ok"))
    scheduler = start_scheduler(config, tmp_path)
    zygote = _zygote_of(scheduler.pid)
    time.sleep(delay_s)
    scheduler.send_signal(signal.SIGKILL)
    scheduler.wait()  # not its pipes: the zygote holds them until it exits
    # A moment, not the seconds its imports take.
    assert_all_dead([zygote.pid], within_s=1.0)
    scheduler.communicate()
