"""The process-tree walk the supervisors poll: the same tree psutil finds by reading every
process on the machine, found from the tree's own /proc entries."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from retrainer.engine.reaper import descendant_pids, kill_descendants

# A child with two children of its own, one of them in a session of its own.
TREE = """
import subprocess, sys, time
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
time.sleep(60)
"""


def test_the_tree_walk_finds_what_psutil_finds_even_across_sessions() -> None:
    root = subprocess.Popen([sys.executable, "-c", TREE])
    try:
        deadline = time.monotonic() + 30
        while len(psutil.Process(root.pid).children(recursive=True)) < 2:
            assert time.monotonic() < deadline, "the tree never grew"
            time.sleep(0.05)
        expected = {p.pid for p in psutil.Process(root.pid).children(recursive=True)}
        assert set(descendant_pids(root.pid)) == expected
        assert sorted(kill_descendants(root.pid)) == sorted(expected)
        # Dead; zombies until the sleeping root reaps them, which is the root's job.
        for pid in descendant_pids(root.pid):
            assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    finally:
        root.kill()
        root.wait()


def test_a_process_that_is_gone_has_no_descendants() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert descendant_pids(int(done.stdout)) == []
