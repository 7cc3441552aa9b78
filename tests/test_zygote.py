"""The zygote that forks every attempt's process, driven directly: it reports each child's
end by serial, survives the scheduler's orphan sweep, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from retrainer.engine.drivers.zygote import LOST_STATUS, Zygote, ZygoteChild, ZygoteGone
from retrainer.engine.reaper import sweep_adopted_orphans
from tests.conftest import cli_env
from tests.support.processes import assert_all_dead


@pytest.fixture()
def zygote() -> Iterator[Zygote]:
    lifeline_r, lifeline_w = os.pipe()
    started = Zygote()
    started.start(["retrainer.engine.worker"], {}, lifeline_r)
    os.close(lifeline_r)
    yield started
    started.close()
    os.close(lifeline_w)


def fork_waiting(zygote: Zygote) -> tuple[ZygoteChild, int]:
    """A process waiting for its attempt, and the write end of its inbox."""
    inbox_r, inbox_w = os.pipe()
    try:
        return zygote.fork(inbox_r), inbox_w
    finally:
        os.close(inbox_r)


def test_a_process_handed_nothing_exits_zero_and_its_status_arrives_by_serial(
    zygote: Zygote,
) -> None:
    first, inbox = fork_waiting(zygote)
    second, other_inbox = fork_waiting(zygote)
    assert first.serial != second.serial and first.pid != second.pid
    assert first.exitcode is None  # waiting for its attempt
    os.close(inbox)
    first.join(10)
    assert first.exitcode == 0
    assert second.exitcode is None  # still waiting: statuses are per child
    os.close(other_inbox)
    second.join(10)
    assert second.exitcode == 0


def test_a_killed_process_reports_minus_the_signal(zygote: Zygote) -> None:
    child, inbox = fork_waiting(zygote)
    try:
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
        child.join(10)
        assert child.exitcode == -signal.SIGKILL
    finally:
        os.close(inbox)


def test_each_process_starts_its_own_session_as_an_attempt_does(zygote: Zygote) -> None:
    child, inbox = fork_waiting(zygote)
    try:
        assert child.pid is not None
        deadline = time.monotonic() + 10
        while os.getsid(child.pid) != child.pid:  # setsid() comes first in the child
            assert time.monotonic() < deadline, "the child never started its session"
            time.sleep(0.01)
    finally:
        os.close(inbox)
        child.join(10)


def test_the_schedulers_orphan_sweep_spares_the_helpers_its_driver_names(zygote: Zygote) -> None:
    assert zygote.pid is not None
    sweep_adopted_orphans(spare={zygote.pid})
    time.sleep(0.2)
    assert psutil.Process(zygote.pid).status() != psutil.STATUS_ZOMBIE
    child, inbox = fork_waiting(zygote)  # and it still forks
    os.close(inbox)
    child.join(10)
    assert child.exitcode == 0


def test_a_fork_after_the_zygote_died_says_so_and_closing_leaves_no_process(zygote: Zygote) -> None:
    waiting, inbox = fork_waiting(zygote)
    assert zygote.pid is not None and waiting.pid is not None
    os.kill(zygote.pid, signal.SIGKILL)
    with pytest.raises(ZygoteGone, match="forks attempts is gone"):
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            child, extra = fork_waiting(zygote)
            os.close(extra)
            time.sleep(0.05)
    os.close(inbox)  # the orphaned waiting process ends on its closed inbox
    zygote_pid = zygote.pid
    zygote.close()
    assert_all_dead([zygote_pid, waiting.pid])


def test_closing_the_zygote_ends_it_and_its_waiting_processes_end_with_their_inboxes(
    zygote: Zygote,
) -> None:
    waiting, inbox = fork_waiting(zygote)
    zygote_pid, waiting_pid = zygote.pid, waiting.pid
    assert zygote_pid is not None and waiting_pid is not None
    zygote.close()
    assert_all_dead([zygote_pid])
    assert psutil.pid_exists(waiting_pid)  # closing the zygote does not touch its children
    os.close(inbox)
    assert_all_dead([waiting_pid])


def test_a_child_outliving_its_zygote_still_ends_and_says_its_status_was_lost(
    zygote: Zygote,
) -> None:
    waiting, inbox = fork_waiting(zygote)
    assert zygote.pid is not None
    os.kill(zygote.pid, signal.SIGKILL)
    assert_all_dead([zygote.pid])
    time.sleep(0.2)
    assert waiting.exitcode is None  # still waiting for its attempt
    os.close(inbox)
    waiting.join(10)  # no hang: its own end is seen without the zygote
    assert waiting.exitcode == LOST_STATUS  # reparented to init, which kept the status


def test_a_subreaper_scheduler_reaps_the_children_of_a_dead_zygote_with_their_status(
    tmp_path: Path,
) -> None:
    # As a run does: the scheduler is a subreaper, so the orphans come to it.
    script = (
        "import os, signal, time\n"
        "from retrainer.engine.drivers.zygote import Zygote\n"
        "from retrainer.engine.reaper import become_subreaper\n"
        "assert become_subreaper()\n"
        "r, w = os.pipe(); z = Zygote(); z.start(['retrainer.engine.worker'], {}, r)\n"
        "inbox_r, inbox_w = os.pipe(); child = z.fork(inbox_r); os.close(inbox_r)\n"
        "os.kill(z.pid, signal.SIGKILL); time.sleep(0.5)\n"
        "os.kill(child.pid, signal.SIGTERM); child.join(10)\n"
        "print(child.exitcode)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=cli_env()
    )
    assert done.stdout.strip() == str(-signal.SIGTERM), done.stderr


def test_a_trainers_warm_up_hook_runs_once_in_the_zygote_and_one_that_raises_is_ignored(
    tmp_path: Path,
) -> None:
    (tmp_path / "warmable.py").write_text(
        "import os, pathlib\n"
        "def warm():\n"
        "    marks = pathlib.Path(os.environ['WARM_MARKS'])\n"
        "    marks.mkdir(exist_ok=True)\n"
        "    (marks / str(os.getpid())).write_text('warm')\n"
        "def broken():\n"
        "    raise RuntimeError('no warm-up today')\n"
    )
    code = (
        f"import sys; sys.path.insert(0, {str(tmp_path)!r})\n"
        "from retrainer.engine.preload import preload\n"
        "preload(['warmable', 'warmable:broken', 'warmable:warm'])\n"
        "print('preloaded')\n"
    )
    marks = tmp_path / "marks"
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=cli_env({"WARM_MARKS": str(marks)}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "preloaded"
    assert len(list(marks.iterdir())) == 1  # called once, after the imports


def test_the_built_in_trainers_warm_up_on_synthetic_bars_without_touching_global_state() -> None:
    import numpy as np
    import torch

    from retrainer.training import quantile, trainer

    np.random.seed(123)
    torch.manual_seed(123)
    trainer.warm_up()
    quantile.warm_up()
    after = (float(np.random.random()), float(torch.rand(1).item()))
    np.random.seed(123)
    torch.manual_seed(123)
    assert after == (float(np.random.random()), float(torch.rand(1).item()))
