"""The real `retrainer run` tells our Bot API server how the night goes."""

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

from retrainer.base.clock import now_utc, run_day
from retrainer.notify.credentials import CHAT_ID_ENV, TOKEN_ENV
from tests.conftest import TINY_TRAINER, RunCli, cli_env, read_json, write_config
from tests.support.telegram_server import FakeBotApi

TOKEN = "555000111:AAFrunRunRunRunRunRunRunRunRunRun99"
ENV = {TOKEN_ENV: TOKEN, CHAT_ID_ENV: "4242"}


@pytest.fixture
def bot_api() -> Iterator[FakeBotApi]:
    server = FakeBotApi().start()
    yield server
    server.stop()


def symbols_of(small_data: Path) -> list[str]:
    return sorted(p.stem for p in small_data.glob("*.parquet"))


def config_for(
    tmp_path: Path,
    small_data: Path,
    api: FakeBotApi,
    behaviours: dict[str, str],
    notify: dict[str, Any] | None = None,
    **run: Any,
) -> Path:
    return write_config(
        tmp_path / "notify.toml",
        {
            "run": {
                "root": str(tmp_path / "root"),
                "symbols": ",".join(behaviours),
                "retries": 0,
                "kill_grace_s": 0.5,
                "stop_grace_s": 0.5,
                "timeout_minutes": 10,
                **run,
            },
            "data": {"path": str(small_data)},
            "trainer": {
                "plugin": "tests.support.plugins:faulty",
                "params": {"pid_dir": str(tmp_path / "pids"), "behaviours": behaviours},
            },
            "notify": {
                "kind": "telegram",
                "api_url": api.api_url,
                "batch_window_s": 60,
                "close_timeout_s": 10,
                "request_timeout_s": 5,
                **(notify or {}),
            },
        },
    )


def engine_log(tmp_path: Path) -> str:
    return (tmp_path / "root" / "logs" / run_day(now_utc()) / "engine.log").read_text()


def summary_path(tmp_path: Path) -> Path:
    return tmp_path / "root" / "summary" / run_day(now_utc()) / "engine_summary.json"


def test_a_run_tells_telegram_it_started_what_failed_escalated_and_how_it_ended(
    tmp_path: Path, small_data: Path, bot_api: FakeBotApi, run_cli: RunCli
) -> None:
    a, b, c = symbols_of(small_data)[:3]
    config = config_for(
        tmp_path,
        small_data,
        bot_api,
        {a: "raise", b: "exit3", c: "ok"},
        notify={"escalate_share": 0.5},
        max_concurrent=2,
    )

    result = run_cli("run", "--config", str(config), env=ENV)

    assert result.returncode == 1, result.stderr
    started, alert, finished = bot_api.texts()
    assert started.startswith("▶️ retrainer: run started")
    assert "mode hybrid · driver local · 3 symbols (3 to train, 0 to skip)" in started
    assert "concurrency 2" in started
    # Two of three failed: past the 50% share, one escalated alert naming both.
    assert alert.startswith("🚨 retrainer: SYSTEMIC FAILURE? 2 of 3 symbols to train")
    assert f"• {a}: ValueError: boom from {a}" in alert
    assert f"• {b}: exited with code 3" in alert
    assert "(exit 1)" in finished and "succeeded 1 · failed 2" in finished
    assert f"• {a}: failed: ValueError: boom from {a}" in finished
    (document,) = bot_api.of("sendDocument")
    assert json.loads(document.files["document"][1]) == read_json(summary_path(tmp_path))
    assert TOKEN not in engine_log(tmp_path) + result.stdout + result.stderr


def test_the_finished_message_names_the_best_and_worst_net_sharpe_of_real_training(
    tmp_path: Path, small_data: Path, bot_api: FakeBotApi, run_cli: RunCli
) -> None:
    a, b = symbols_of(small_data)[:2]
    config = write_config(
        tmp_path / "real.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": f"{a},{b}"},
            "data": {"path": str(small_data)},
            "trainer": {"params": TINY_TRAINER},
            "notify": {"kind": "telegram", "api_url": bot_api.api_url, "attach_summary": False},
        },
    )

    assert run_cli("run", "--config", str(config), env=ENV).returncode == 0
    finished = bot_api.texts()[-1]

    by_symbol = read_json(summary_path(tmp_path))["by_symbol"]
    sharpe = {s: by_symbol[s]["metrics"]["net_sharpe"] for s in (a, b)}
    best, worst = max(sharpe, key=sharpe.__getitem__), min(sharpe, key=sharpe.__getitem__)
    assert finished.startswith("✅ retrainer: run finished")
    assert (
        f"net Sharpe: best {best} {sharpe[best]:.2f} · worst {worst} {sharpe[worst]:.2f}"
        in finished
    )
    assert "slowest: " in finished


def test_no_notify_sends_nothing(
    tmp_path: Path, small_data: Path, bot_api: FakeBotApi, run_cli: RunCli
) -> None:
    a = symbols_of(small_data)[0]
    config = config_for(tmp_path, small_data, bot_api, {a: "raise"})

    assert run_cli("run", "--config", str(config), "--no-notify", env=ENV).returncode == 1
    assert bot_api.requests == []


def test_a_hanging_bot_api_delays_the_run_by_at_most_the_close_timeout(
    tmp_path: Path, small_data: Path, bot_api: FakeBotApi, run_cli: RunCli
) -> None:
    bot_api.script(then="hang")
    a, b = symbols_of(small_data)[:2]
    # Each request could hang 60 s, and be retried: only the close deadline bounds the run.
    config = config_for(
        tmp_path,
        small_data,
        bot_api,
        {a: "ok", b: "ok"},
        notify={"request_timeout_s": 60, "close_timeout_s": 2},
    )

    started = time.monotonic()
    result = run_cli("run", "--config", str(config), env=ENV, timeout=120)
    took = time.monotonic() - started

    assert result.returncode == 0, result.stderr
    assert took < 45, f"the run took {took:.0f} s"  # a few seconds of work + 2 s + slack
    assert '"event": "notify_failed"' in engine_log(tmp_path)


def test_a_refused_token_is_logged_and_does_not_change_the_exit_code(
    tmp_path: Path, small_data: Path, bot_api: FakeBotApi, run_cli: RunCli
) -> None:
    bot_api.script(then="401")
    a = symbols_of(small_data)[0]
    config = config_for(tmp_path, small_data, bot_api, {a: "ok"})

    result = run_cli("run", "--config", str(config), env=ENV)

    assert result.returncode == 0, result.stderr
    log = engine_log(tmp_path)
    assert "refused the token or chat" in log
    assert len(bot_api.requests) == 1
    assert TOKEN not in log + result.stdout + result.stderr


def test_a_missing_token_is_logged_and_the_run_goes_on(
    tmp_path: Path, small_data: Path, bot_api: FakeBotApi, run_cli: RunCli
) -> None:
    a = symbols_of(small_data)[0]
    config = config_for(tmp_path, small_data, bot_api, {a: "ok"})

    result = run_cli("run", "--config", str(config), env={CHAT_ID_ENV: "1"})

    assert result.returncode == 0, result.stderr
    assert f"{TOKEN_ENV} not set in the environment" in engine_log(tmp_path)
    assert bot_api.requests == []


def test_a_graceful_stop_still_sends_the_finished_message(
    tmp_path: Path, small_data: Path, bot_api: FakeBotApi
) -> None:
    a, b = symbols_of(small_data)[:2]
    config = config_for(tmp_path, small_data, bot_api, {a: "hang", b: "hang"})
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "retrainer", "run", "--config", str(config)],
        cwd=tmp_path,
        env=cli_env(ENV),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    bot_api.wait_for(1)
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "pids").glob("*.pid"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)

    scheduler.send_signal(signal.SIGTERM)
    _, stderr = scheduler.communicate(timeout=60)

    assert scheduler.returncode == 130, stderr
    finished = bot_api.texts()[-1]
    assert "(exit 130)" in finished and "interrupted 2" in finished
