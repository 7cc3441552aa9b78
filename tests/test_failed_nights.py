"""A night that fails, even before it starts, is never silent: it leaves a summary and a
record of that night, tells the notifiers, and `retrainer status` fails with it. Real runs
of the real command."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from retrainer.base.artifacts import Layout
from retrainer.base.clock import now_utc, run_day
from retrainer.base.lock import RunLock
from tests.conftest import REPO, RunCli, cli_env, read_json, write_config
from tests.support.processes import wait_for_pids
from tests.support.telegram_server import FakeBotApi
from tests.test_item_faults import faulty_config, summary_of, symbols_of
from tests.test_survival import run_in_mount_namespace


def invocation_records(tmp_path: Path) -> list[dict[str, Any]]:
    folder = tmp_path / "root" / "runs" / run_day(now_utc()) / "invocations"
    return [read_json(p) for p in sorted(folder.glob("*.json"))]


def status_json(run_cli: RunCli, config: Path, code: int) -> dict[str, Any]:
    result = run_cli("status", "--json", "--config", str(config))
    assert result.returncode == code, result.stdout + result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def plugin_module(folder: Path, name: str, text: str) -> dict[str, str]:
    """A plug-in written for one test; the environment that lets the run import it."""
    (folder / f"{name}.py").write_text(text)
    return {"PYTHONPATH": f"{folder}:{REPO}"}


def test_a_night_stopped_by_bad_input_leaves_a_summary_a_record_and_a_failing_status(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    good = symbols_of(small_data)[0]
    config = faulty_config(tmp_path, small_data, {good: "ok", "NOSUCH": "ok"})

    result = run_cli("run", "--config", str(config))

    assert result.returncode == 2, result.stderr
    assert "NOSUCH" in result.stderr and "Traceback" not in result.stderr
    summary = summary_of(tmp_path)
    assert summary["started"] is False and summary["exit_code"] == 2
    assert summary["stage"] == "plan" and "NOSUCH" in summary["reason"]
    assert summary["started_at"] <= summary["finished_at"]
    assert summary["previous_summary"] is None and summary["by_symbol"] == {}
    (record,) = invocation_records(tmp_path)
    assert record["run_id"] == summary["run_id"] and record["exit_code"] == 2
    engine_log = tmp_path / "root" / "logs" / run_day(now_utc()) / "engine.log"
    assert '"event": "job_not_started"' in engine_log.read_text()

    status = run_cli("status", "--config", str(config))
    assert status.returncode == 1, status.stderr
    assert "did not start: exit 2 (bad input)" in status.stdout
    assert "NOSUCH" in status.stdout and "no run started today" in status.stdout
    view = status_json(run_cli, config, 1)
    assert view["phase"] == "did_not_start" and view["exit_code"] == 2
    assert view["stage"] == "plan" and "NOSUCH" in view["reason"]

    history = run_cli("history", good, "--json", "--config", str(config))
    assert history.returncode == 0, history.stderr
    (row,) = json.loads(history.stdout)["attempts"]
    assert row["status"] == "not started" and row["attempt"] == 0
    assert row["reason"].startswith("exit 2 (bad input): ") and "NOSUCH" in row["reason"]


def test_a_night_that_does_not_start_keeps_the_days_earlier_summary_and_status_shows_both(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    good = symbols_of(small_data)[0]
    day = run_day(now_utc())
    config = faulty_config(tmp_path, small_data, {good: "ok"})
    assert run_cli("run", "--config", str(config)).returncode == 0
    full = summary_of(tmp_path)
    kept_name = f"summary/{day}/engine_summary.{full['run_id']}.json"

    for _ in range(2):  # a second failure still points at the good summary
        faulty_config(tmp_path, small_data, {good: "ok", "NOSUCH": "ok"})
        assert run_cli("run", "--config", str(config)).returncode == 2
        small = summary_of(tmp_path)
        assert small["started"] is False and small["previous_summary"] == kept_name
        assert read_json(tmp_path / "root" / kept_name) == full

    status = run_cli("status", "--config", str(config))
    assert status.returncode == 1
    assert "did not start: exit 2 (bad input)" in status.stdout
    assert f"the latest run today that started: run {day} ({full['run_id']}" in status.stdout
    assert "(exit 0)" in status.stdout and "1/1 done" in status.stdout
    ledger = read_json(tmp_path / "root" / "runs" / day / "status.json")
    assert [r["exit_code"] for r in ledger["runs"]] == [0]  # the ledger's own runs

    faulty_config(tmp_path, small_data, {good: "ok"})
    assert run_cli("run", "--config", str(config), "--force").returncode == 0
    assert run_cli("status", "--config", str(config)).returncode == 0
    assert summary_of(tmp_path)["started"] is True


def test_a_night_refused_by_the_lock_is_recorded_but_never_replaces_a_summary_of_the_day(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = faulty_config(tmp_path, small_data, {symbols_of(small_data)[0]: "ok"})
    lock = Layout(tmp_path / "root").lock_path()
    with RunLock(lock, "holder-run"):
        refused = run_cli("run", "--config", str(config))
    assert refused.returncode == 3
    first = summary_of(tmp_path)  # a day with no summary gets the refusal's
    assert first["exit_code"] == 3 and first["stage"] == "lock"
    assert "holder-run" in first["reason"]

    assert run_cli("run", "--config", str(config)).returncode == 0
    full = summary_of(tmp_path)
    with RunLock(lock, "holder-run"):
        assert run_cli("run", "--config", str(config)).returncode == 3
    assert summary_of(tmp_path) == full  # the day's summary is the lock holder's to write
    records = invocation_records(tmp_path)
    assert [r["exit_code"] for r in records] == [3, 3]
    assert all("another retrainer run holds the lock" in r["reason"] for r in records)
    status = run_cli("status", "--config", str(config))
    assert status.returncode == 1 and "exit 3 (another run holds the lock)" in status.stdout


def test_an_invocation_refused_by_the_lock_does_not_hide_the_night_that_holds_it(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    names = symbols_of(small_data)[:2]
    config = faulty_config(tmp_path, small_data, dict.fromkeys(names, "hang"), timeout_minutes=10)
    night = subprocess.Popen(
        [sys.executable, "-m", "retrainer", "run", "--config", str(config)],
        cwd=tmp_path,
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_pids(tmp_path, 2)
        assert run_cli("run", "--config", str(config)).returncode == 3
        (refused,) = invocation_records(tmp_path)  # recorded, and yet:
        assert refused["exit_code"] == 3 and refused["started"] is False
        view = status_json(run_cli, config, 0)
        assert view["phase"] == "running" and len(view["running"]) == 2
    finally:
        night.send_signal(signal.SIGTERM)
        assert night.wait(timeout=60) == 130
    assert summary_of(tmp_path)["exit_code"] == 130  # the holder's own summary


def test_an_internal_error_before_the_plan_is_recorded_with_exit_70(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    env = plugin_module(
        tmp_path, "oddpreload", "def train(ctx):\n    return {}\n\ntrain.preload_modules = 42\n"
    )
    config = write_config(
        tmp_path / "c.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": symbols_of(small_data)[0]},
            "data": {"path": str(small_data)},
            "trainer": {"plugin": "oddpreload:train"},
        },
    )

    result = run_cli("run", "--config", str(config), env=env)

    assert result.returncode == 70, result.stderr
    assert "internal error: TypeError" in result.stderr
    summary = summary_of(tmp_path)
    assert summary["exit_code"] == 70 and summary["stage"] == "driver"
    assert summary["reason"].startswith("internal error: TypeError")
    status = run_cli("status", "--config", str(config))
    assert status.returncode == 1 and "exit 70 (internal error)" in status.stdout


SLEEPY_PARAMS = """
import time
from pathlib import Path

class Params:
    @staticmethod
    def model_validate(params):
        Path(params["marker"]).write_text("planning")
        time.sleep(120)

def train(ctx):
    return {}

train.params_model = Params
train.preload_modules = ()
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_signal_while_the_night_is_planned_is_recorded_with_exit_130(
    tmp_path: Path, small_data: Path, sig: signal.Signals
) -> None:
    env = plugin_module(tmp_path, "sleepyparams", SLEEPY_PARAMS)
    marker = tmp_path / "planning"
    config = write_config(
        tmp_path / "c.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": symbols_of(small_data)[0]},
            "data": {"path": str(small_data)},
            "trainer": {"plugin": "sleepyparams:train", "params": {"marker": str(marker)}},
        },
    )
    run = subprocess.Popen(
        [sys.executable, "-m", "retrainer", "run", "--config", str(config)],
        cwd=tmp_path,
        env=cli_env(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists():
        assert time.monotonic() < deadline and run.poll() is None, run.communicate()
        time.sleep(0.05)

    run.send_signal(sig)
    _, stderr = run.communicate(timeout=60)

    assert run.returncode == 130, stderr
    assert f"retrainer: stopped by {sig.name}" in stderr and "Traceback" not in stderr
    summary = summary_of(tmp_path)
    assert summary["started"] is False and summary["exit_code"] == 130
    assert summary["stage"] == "plan" and summary["reason"] == f"stopped by {sig.name}"


@pytest.fixture
def bot_api() -> Iterator[FakeBotApi]:
    server = FakeBotApi().start()
    yield server
    server.stop()


def telegram(api: FakeBotApi, secrets: Path) -> dict[str, Any]:
    secrets.write_text(
        "RETRAINER_TELEGRAM_TOKEN=555000111:AAFrunRunRunRunRunRunRunRunRunRun99\n"
        "RETRAINER_TELEGRAM_CHAT_ID=4242\n"
    )
    return {
        "kind": "telegram",
        "api_url": api.api_url,
        "secrets_file": str(secrets),
        "close_timeout_s": 10,
        "request_timeout_s": 5,
    }


def test_a_night_that_does_not_start_tells_the_notifier_why(
    tmp_path: Path, small_data: Path, run_cli: RunCli, bot_api: FakeBotApi
) -> None:
    config = faulty_config(tmp_path, small_data, {symbols_of(small_data)[0]: "ok", "NOSUCH": "ok"})
    with config.open("a") as file:
        file.write(
            "[notify]\n"
            + "".join(
                f"{k} = {json.dumps(v)}\n"
                for k, v in telegram(bot_api, tmp_path / "telegram.env").items()
            )
        )

    assert run_cli("run", "--config", str(config)).returncode == 2

    (text,) = bot_api.texts()
    assert text.startswith("❌ retrainer: run did not start on ") and "(exit 2)" in text
    assert "stopped at: plan" in text and "NOSUCH" in text
    (document,) = bot_api.of("sendDocument")
    sent = json.loads(next(iter(document.files.values()))[1])
    assert sent["started"] is False and sent["exit_code"] == 2


def test_an_io_error_before_the_night_starts_is_summarised_and_notified(
    tmp_path: Path, small_data: Path, bot_api: FakeBotApi
) -> None:
    config = faulty_config(tmp_path, small_data, {symbols_of(small_data)[0]: "ok"})
    with config.open("a") as file:
        file.write(
            "[notify]\n"
            + "".join(
                f"{k} = {json.dumps(v)}\n"
                for k, v in telegram(bot_api, tmp_path / "telegram.env").items()
            )
        )
    runs = tmp_path / "root" / "runs"
    runs.mkdir(parents=True)

    result = run_in_mount_namespace(
        f"mount -t tmpfs -o ro tmpfs {runs}", ["run", "--config", str(config)], tmp_path
    )

    assert result.returncode == 74, result.stderr
    assert "Read-only file system" in result.stderr and "Traceback" not in result.stderr
    assert '"record_failed"' in result.stderr  # runs/ could not take the record: said so
    summary = summary_of(tmp_path)  # summary/ could
    assert summary["started"] is False and summary["exit_code"] == 74
    assert "Read-only file system" in summary["reason"]
    (text,) = bot_api.texts()
    assert "run did not start" in text and "(exit 74)" in text


def test_status_check_says_ok_or_failed_on_one_line_and_fails_a_latest_run_too_old(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    good, bad = symbols_of(small_data)[:2]
    config = faulty_config(tmp_path, small_data, {good: "ok"})
    assert run_cli("run", "--config", str(config)).returncode == 0

    ok = run_cli("status", "--check", "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: run ") and ok.stdout.count("\n") == 1
    assert "exit 0 (ok): 1/1 done" in ok.stdout
    stale = run_cli("status", "--check", "--max_age_hours", "0", "--config", str(config))
    assert stale.returncode == 1
    assert stale.stdout.startswith("FAILED: the latest run, ") and "h ago" in stale.stdout

    faulty_config(tmp_path, small_data, {good: "ok", bad: "raise"})
    assert run_cli("run", "--config", str(config)).returncode == 1
    failed = run_cli("status", "--check", "--config", str(config))
    assert failed.returncode == 1 and failed.stdout.count("\n") == 1
    assert failed.stdout.startswith("FAILED: run ")
    assert "exit 1 (some symbols failed)" in failed.stdout and f"{bad}: ValueError" in failed.stdout
    assert run_cli("status", "--config", str(config)).returncode == 1
