"""Watching a night: plain progress lines off a terminal, `status` from another shell,
`history` of a symbol across days. Real runs of the real command."""

from __future__ import annotations

import json
import os
import pty
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retrainer.base.clock import iso, now_utc, run_day
from retrainer.ledger.entries import Attempt, ItemState, LedgerEntry
from retrainer.views.runview import build_view
from tests.conftest import RunCli, cli_env
from tests.test_item_faults import faulty_config as fault_config

POLL_DEADLINE_S = 90.0


def faulty_config(
    tmp_path: Path, small_data: Path, behaviours: dict[str, str], **run: object
) -> Path:
    """Three at a time, and no deadline to speak of: the hung item runs until stopped."""
    # Any: `run` may also carry fault_config's own slow_s, which mypy cannot tell apart.
    settings: dict[str, Any] = {"max_concurrent": 3, "timeout_minutes": 45, **run}
    return fault_config(tmp_path, small_data, behaviours, **settings)


def start_run(tmp_path: Path, config: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "retrainer", "run", "--config", str(config)],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def status_json(run_cli: RunCli, config: Path, code: int = 0) -> dict[str, Any]:
    """`status --json`; its exit code is 0 while the run goes or after it ended with 0."""
    result = run_cli("status", "--json", "--config", str(config))
    assert result.returncode == code, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def poll_status(
    run_cli: RunCli,
    config: Path,
    until: Callable[[dict[str, Any]], bool],
    run: subprocess.Popen[str],
) -> dict[str, Any]:
    """Ask `status --json` again until the run reaches the wanted state."""
    deadline = time.monotonic() + POLL_DEADLINE_S
    while time.monotonic() < deadline:
        assert run.poll() is None, run.communicate()
        try:
            view = status_json(run_cli, config)
        except AssertionError:  # no ledger yet: the run is still planning
            view = {}
        if view and until(view):
            return view
        time.sleep(0.2)
    raise AssertionError(f"the run never reached the state; last status: {view}")


@pytest.fixture
def hung_run(tmp_path: Path, small_data: Path) -> Any:
    """A run where BTCUSDT hangs, ETHUSDT fails and SOLUSDT succeeds, still going."""
    config = faulty_config(
        tmp_path, small_data, {"BTCUSDT": "hang", "ETHUSDT": "raise", "SOLUSDT": "ok"}
    )
    run = start_run(tmp_path, config)
    yield config, run
    if run.poll() is None:
        run.kill()
    run.wait(timeout=60)
    for stream in (run.stdout, run.stderr):
        if stream is not None:
            stream.close()


def test_a_run_through_a_pipe_prints_plain_progress_lines_without_control_characters(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = faulty_config(
        tmp_path, small_data, {"BTCUSDT": "ok", "ETHUSDT": "raise", "SOLUSDT": "ok"}
    )
    result = run_cli("run", "--config", str(config))
    assert result.returncode == 1, result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    progress = [line for line in result.stdout.splitlines() if line.startswith("progress: ")]
    assert progress, result.stdout
    assert "2/3 done, 0 running, 1 failed, 0 skipped" in progress[-1]
    assert "ETHUSDT: ValueError: boom from ETHUSDT" in result.stdout


def test_status_from_another_shell_follows_a_run_until_it_finishes(
    tmp_path: Path, run_cli: RunCli, hung_run: Any
) -> None:
    config, run = hung_run
    view = poll_status(
        run_cli,
        config,
        lambda v: v["done"] == 1 and v["failed"] == 1 and len(v["running"]) == 1,
        run,
    )
    assert view["phase"] == "running" and view["day"] == run_day(now_utc())
    assert view["total"] == 3 and view["queued"] == 0
    assert view["running"][0]["symbol"] == "BTCUSDT" and view["running"][0]["elapsed_s"] >= 0
    assert view["failures"] == [
        {
            "symbol": "ETHUSDT",
            "state": "failed",
            "attempts": 1,
            "reason": "ValueError: boom from ETHUSDT",
            "retrying": False,
        }
    ]

    text = run_cli("status", "--config", str(config))
    assert "1/3 done, 1 running, 1 failed, 0 skipped" in text.stdout
    assert "BTCUSDT" in text.stdout and "boom from ETHUSDT" in text.stdout
    assert "\x1b" not in text.stdout

    watch = subprocess.Popen(
        [sys.executable, "-m", "retrainer", "status", "--watch", "--config", str(config)],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert watch.stdout is not None
    first = watch.stdout.readline()  # the watch has read the running run
    assert first.startswith("progress: 1/3 done, 1 running, 1 failed"), first
    assert "running BTCUSDT" in first
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 130
    out, err = watch.communicate(timeout=60)  # the watch ends by itself with the run
    assert watch.returncode == 1, err  # the run it watched did not end with 0
    assert "\x1b" not in first + out
    assert "finished" in out.splitlines()[-2] and "(exit 130)" in out.splitlines()[-2]
    assert "1/3 done, 0 running, 1 failed, 0 skipped, 1 interrupted" in out.splitlines()[-1]

    after = status_json(run_cli, config, code=1)
    assert after["phase"] == "finished" and after["exit_code"] == 130
    assert after["running"] == [] and after["interrupted"] == 1 and after["eta_s"] is None


def test_status_tells_a_run_that_died_without_finishing(
    tmp_path: Path, run_cli: RunCli, hung_run: Any
) -> None:
    config, run = hung_run
    poll_status(run_cli, config, lambda v: len(v["running"]) == 1, run)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=60)
    view = status_json(run_cli, config, code=1)
    assert view["phase"] == "died" and view["running"] == []
    assert view["interrupted"] == 1 and view["exit_code"] is None
    assert "died: no finish recorded" in run_cli("status", "--config", str(config)).stdout


def test_status_without_any_run_is_bad_input(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("status", "--root", str(tmp_path / "empty"))
    assert result.returncode == 2
    assert "no run ledger under" in result.stderr


def test_history_lists_every_attempt_of_a_symbol_across_days(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = faulty_config(
        tmp_path, small_data, {"BTCUSDT": "fail_once", "ETHUSDT": "ok"}, retries=1
    )
    assert run_cli("run", "--config", str(config)).returncode == 0
    runs = tmp_path / "root" / "runs"
    today = run_day(now_utc())
    shutil.copytree(runs / today, runs / "20260101Z")  # an earlier night's ledger

    result = run_cli("history", "btcusdt", "--json", "--config", str(config))
    assert result.returncode == 0, result.stderr
    history = json.loads(result.stdout)
    assert history["symbol"] == "BTCUSDT"
    rows = [(r["day"], r["attempt"], r["status"]) for r in history["attempts"]]
    assert rows == [
        (day, n, s) for day in ("20260101Z", today) for n, s in ((1, "failed"), (2, "success"))
    ]
    first = history["attempts"][0]
    assert first["reason"] == "RuntimeError: first attempt fails" and first["minutes"] >= 0

    text = run_cli("history", "BTCUSDT", "--config", str(config)).stdout
    assert "BTCUSDT: 4 attempts" in text and "first attempt fails" in text
    assert "no attempts" in run_cli("history", "NOPE", "--config", str(config)).stdout


def test_the_eta_spreads_the_work_left_over_the_window() -> None:
    started = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)
    now = started + timedelta(seconds=20)

    def entry(symbol: str, state: ItemState, start_s: float, seconds: float | None) -> LedgerEntry:
        attempt = Attempt(
            number=1,
            state=state,
            artifact_dir="",
            device="cpu",
            threads=1,
            started_at=iso(started + timedelta(seconds=start_s)),
            seconds=seconds,
            slot=0,
        )
        return LedgerEntry(
            symbol=symbol, state=state, updated_at=iso(now), attempts=(attempt,), run_id="r"
        )

    run = {
        "run_id": "r",
        "started_at": iso(started),
        "to_run": 5,
        "to_skip": 1,
        "window": 2,
        "mode": "hybrid",
        "retries": 0,
    }
    entries = {
        "A": entry("A", ItemState.SUCCESS, 1, 10.0),
        "B": entry("B", ItemState.RUNNING, 16, None),
        "C": LedgerEntry(symbol="C", state=ItemState.PENDING, updated_at="", run_id="r"),
    }
    view = build_view("20261123Z", run, entries, now, alive=True, until=None)
    assert (view.done, len(view.running), view.queued, view.skipped, view.total) == (1, 1, 3, 1, 6)
    assert view.running[0].elapsed_s == 4.0 and view.elapsed_s == 20.0
    # three queued at 10 s each and 6 s left of B's, over a window of two
    assert view.eta_s == pytest.approx((3 * 10.0 + 6.0) / 2)


def test_a_run_on_a_terminal_draws_the_live_view_with_the_running_symbols(
    tmp_path: Path, small_data: Path
) -> None:
    config = faulty_config(
        tmp_path, small_data, {"BTCUSDT": "slow", "ETHUSDT": "raise"}, max_concurrent=2
    )
    primary, secondary = pty.openpty()
    run = subprocess.Popen(
        [sys.executable, "-m", "retrainer", "run", "--config", str(config)],
        cwd=tmp_path,
        env=cli_env({"COLUMNS": "120", "LINES": "40", "TERM": "xterm"}),
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    screen = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # EIO: the run exited and closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    os.close(primary)
    assert run.wait(timeout=60) == 1
    text = screen.decode("utf-8", "replace")
    assert "\x1b[" in text  # drawn, redrawn: a live view, not lines
    assert "2 running" in text or "1 running" in text
    assert "BTCUSDT" in text and "ValueError: boom from ETHUSDT" in text
    assert "coin_succeeded" in text  # the log's lines scroll above it
    assert "1/2 done, 0 running, 1 failed, 0 skipped" in text  # its last frame
