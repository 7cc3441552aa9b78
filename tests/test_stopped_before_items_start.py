"""A run stopped after its night opened but before any item started: the summary, the
final line, `status` and the ledger agree that its items were not started, and an
earlier success of the day keeps its own time and run. Real runs of the real command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import Layout
from retrainer.base.clock import now_utc, run_day
from retrainer.ledger.journal import read_ledger
from tests.conftest import REPO, RunCli, cli_env, read_json, write_config
from tests.test_item_faults import summary_of, symbols_of

TRAINER = """
def train(ctx):
    (ctx.out_dir / "model.bin").write_bytes(ctx.symbol.encode())
    return {"value": 1.0}

train.preload_modules = ("slow_zygote",)
"""
# Imported by the zygote before it forks anything: while it sleeps, no item can start.
# (A stopped run's exit waits for the zygote's imports to end: keep it short.)
SLOW_ZYGOTE = """
import time
from pathlib import Path

if Path({slow!r}).exists():
    Path({waiting!r}).write_text("")
    time.sleep(20)
"""


def config_with_a_zygote_that_can_be_slow(tmp_path: Path, small_data: Path) -> Path:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "quick_trainer.py").write_text(TRAINER)
    (plugins / "slow_zygote.py").write_text(
        SLOW_ZYGOTE.format(slow=str(tmp_path / "slow"), waiting=str(tmp_path / "waiting"))
    )
    return write_config(
        tmp_path / "c.toml",
        {
            "run": {
                "root": str(tmp_path / "root"),
                "symbols": ",".join(symbols_of(small_data)[:2]),
                "retries": 0,
                "kill_grace_s": 0.5,
                "stop_grace_s": 0.5,
            },
            "data": {"path": str(small_data)},
            "trainer": {"plugin": "quick_trainer:train"},
        },
    )


def env_for(tmp_path: Path) -> dict[str, str]:
    return {"PYTHONPATH": f"{tmp_path / 'plugins'}:{REPO}"}


def ledger_runs(tmp_path: Path) -> dict[str, dict[str, Any]]:
    layout, day = Layout(tmp_path / "root"), run_day(now_utc())
    return read_ledger(layout.status_path(day), layout.journal_path(day)).runs


def stop_once_the_night_has_opened(
    tmp_path: Path, config: Path, runs_before: int, *flags: str
) -> subprocess.CompletedProcess[str]:
    """Start a run whose zygote sleeps in its imports; Ctrl-C once its night is in the
    ledger: it has opened, and no item can have started."""
    (tmp_path / "slow").write_text("")
    run = subprocess.Popen(
        [sys.executable, "-m", "retrainer", "run", "--config", str(config), *flags],
        cwd=tmp_path,
        env=cli_env(env_for(tmp_path)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ((tmp_path / "waiting").exists() and len(ledger_runs(tmp_path)) > runs_before):
        assert time.monotonic() < deadline and run.poll() is None, run.communicate()
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    out, err = run.communicate(timeout=90)
    return subprocess.CompletedProcess(run.args, run.returncode, out, err)


def test_ctrl_c_before_a_forced_rerun_starts_keeps_the_earlier_successes_as_they_were(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = config_with_a_zygote_that_can_be_slow(tmp_path, small_data)
    names = symbols_of(small_data)[:2]
    day = run_day(now_utc())
    assert run_cli("run", "--config", str(config), env=env_for(tmp_path)).returncode == 0
    status_path = tmp_path / "root" / "runs" / day / "status.json"
    before = read_json(status_path)["symbols"]

    stopped = stop_once_the_night_has_opened(tmp_path, config, 1, "--force")

    assert stopped.returncode == 130, stopped.stderr
    final = [line for line in stopped.stdout.splitlines() if line.startswith("retrainer ")]
    assert len(final) == 1 and final[0].startswith(
        f"retrainer {day}: 2 symbols: 0 succeeded, 0 failed, 0 skipped, 0 interrupted, "
        "2 not started in "
    )
    summary = summary_of(tmp_path)
    assert (summary["succeeded"], summary["interrupted"], summary["not_started"]) == (0, 0, 2)
    for name in names:
        item = summary["by_symbol"][name]
        assert item["status"] == "not_started" and item["attempts"] == 0
        assert item["reason"] == "not started: the run stopped by SIGINT first"
        assert item["ledger_state"] == "success"
        assert item["run_id"] == before[name]["run_id"] and item["at"] == before[name]["updated_at"]
        assert item["artifact_dir"] == before[name]["artifact_dir"]
    assert read_json(status_path)["symbols"] == before  # the ledger: untouched

    status = run_cli("status", "--config", str(config))
    assert status.returncode == 1  # the run it shows ended 130
    assert "0/2 done, 0 running, 0 failed, 0 skipped, 2 not started" in status.stdout
    assert "interrupted" not in status.stdout
    view = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    assert (view["not_started"], view["interrupted"], view["exit_code"]) == (2, 0, 130)
    plan = run_cli("run", "--config", str(config), "--dry_run", env=env_for(tmp_path))
    for name in names:  # and the next plan still knows when they succeeded
        assert f"succeeded today at {before[name]['updated_at']}" in plan.stdout


def test_ctrl_c_before_a_first_run_starts_reports_its_items_not_started_and_pending(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = config_with_a_zygote_that_can_be_slow(tmp_path, small_data)

    stopped = stop_once_the_night_has_opened(tmp_path, config, 0)

    assert stopped.returncode == 130, stopped.stderr
    assert "0 succeeded, 0 failed, 0 skipped, 0 interrupted, 2 not started" in stopped.stdout
    summary = summary_of(tmp_path)
    states = {(s["status"], s["ledger_state"]) for s in summary["by_symbol"].values()}
    assert states == {("not_started", "pending")}
    ledger = read_json(tmp_path / "root" / "runs" / run_day(now_utc()) / "status.json")
    assert {e["state"] for e in ledger["symbols"].values()} == {"pending"}
    assert {e["why"] for e in ledger["symbols"].values()} == {"not started: SIGINT"}
    view = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    assert (view["not_started"], view["interrupted"], view["done"]) == (2, 0, 0)
