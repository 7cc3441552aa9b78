"""Logging: JSON lines in engine.log, a console fit for where it goes, no secret anywhere."""

from __future__ import annotations

import io
import json
import multiprocessing
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from retrainer.base import logs
from retrainer.base.errors import BadInputError
from retrainer.base.logs import (
    COIN_STARTED,
    COIN_SUCCEEDED,
    JOB_COMPLETED,
    JOB_STARTED,
    MASK,
    bound_context,
    configure_logging,
    configure_worker_logging,
    get_logger,
    redact_text,
)

TELEGRAM_TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ESC = "\x1b"


@pytest.fixture(autouse=True)
def fresh_logging() -> Iterator[None]:
    yield
    logs.close_logging()
    logs.clear_context()
    structlog.reset_defaults()


@pytest.fixture
def engine_log(tmp_path: Path) -> Path:
    return tmp_path / "logs" / "20261123Z" / "engine.log"


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _reject_non_json(token: str) -> Any:
    raise AssertionError(f"not strict JSON: {token}")


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


class TestEngineLog:
    def test_every_event_is_one_json_line_with_timestamp_level_event_and_context(
        self, engine_log: Path
    ) -> None:
        configure_logging(engine_log, "info", console="off")

        with bound_context(run_id="r-1", symbol="BTCUSDT", attempt=2):
            get_logger(mode="hybrid").info(COIN_STARTED, timeout_s=2700)
        get_logger().info(JOB_COMPLETED)

        started, completed = read_lines(engine_log)
        assert list(started)[:3] == ["timestamp", "level", "event"]
        assert started["event"] == COIN_STARTED
        assert started["level"] == "info"
        assert started["timestamp"].endswith("Z")
        assert (started["run_id"], started["symbol"], started["attempt"]) == ("r-1", "BTCUSDT", 2)
        assert (started["mode"], started["timeout_s"]) == ("hybrid", 2700)
        assert completed["event"] == JOB_COMPLETED
        assert "symbol" not in completed

    def test_its_folders_are_created_and_it_is_appended_to_not_overwritten(
        self, engine_log: Path
    ) -> None:
        configure_logging(engine_log, "info", console="off")
        get_logger().info(JOB_STARTED)
        configure_logging(engine_log, "info", console="off")
        get_logger().info(JOB_COMPLETED)

        assert [line["event"] for line in read_lines(engine_log)] == [JOB_STARTED, JOB_COMPLETED]

    def test_events_below_the_configured_level_are_dropped(self, engine_log: Path) -> None:
        configure_logging(engine_log, "warning", console="off")

        get_logger().info("routine")
        get_logger().warning("unusual")

        assert [line["event"] for line in read_lines(engine_log)] == ["unusual"]

    def test_an_exception_is_logged_with_its_traceback_as_text(self, engine_log: Path) -> None:
        configure_logging(engine_log, "info", console="off")

        try:
            raise RuntimeError("disk on fire")
        except RuntimeError:
            get_logger().exception("upload_failed")

        (line,) = read_lines(engine_log)
        assert line["level"] == "error"
        assert "RuntimeError: disk on fire" in line["exception"]

    def test_values_json_cannot_encode_are_written_as_text(self, engine_log: Path) -> None:
        configure_logging(engine_log, "info", console="off")

        get_logger().info(
            "odd", folder=Path("/srv/models"), by_pair={("a", 1): 2}, loss=float("nan")
        )

        line = json.loads(engine_log.read_text(), parse_constant=_reject_non_json)
        assert line["folder"] == "/srv/models"
        assert line["by_pair"] == {"('a', 1)": 2}
        assert line["loss"] == "nan"

    def test_an_unknown_level_is_bad_input(self, engine_log: Path) -> None:
        with pytest.raises(BadInputError, match="verbose"):
            configure_logging(engine_log, "verbose")

    def test_a_log_file_that_cannot_be_opened_is_bad_input_naming_it(self, tmp_path: Path) -> None:
        (tmp_path / "logs").write_text("a file where a folder should be")
        with pytest.raises(BadInputError, match="engine.log"):
            configure_logging(tmp_path / "logs" / "engine.log", "info", console="off")

    def test_a_logger_bound_before_reconfiguring_writes_to_the_new_files(
        self, tmp_path: Path
    ) -> None:
        configure_logging(tmp_path / "first.log", "info", console="off")
        log = get_logger(symbol="BTCUSDT").bind(attempt=1)
        configure_logging(tmp_path / "second.log", "info", console="off")

        log.info(COIN_SUCCEEDED)

        assert (tmp_path / "first.log").read_text() == ""
        assert read_lines(tmp_path / "second.log")[0]["symbol"] == "BTCUSDT"

    def test_a_broken_console_does_not_stop_the_engine_log(self, engine_log: Path) -> None:
        console = io.StringIO()
        configure_logging(engine_log, "info", console="json", stream=console)
        console.close()

        get_logger().info(JOB_STARTED)

        assert read_lines(engine_log)[0]["event"] == JOB_STARTED


WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from retrainer.base.logs import configure_logging, get_logger

    engine_log, ready, go, name = sys.argv[1:]
    configure_logging(Path(engine_log), "info", console="off")
    Path(ready).touch()
    while not Path(go).exists():  # start both writers at the same instant
        time.sleep(0.001)
    log = get_logger(writer=name)
    for seq in range(2000):
        log.info("line", seq=seq, padding="x" * 5000)
""")


class TestSharedEngineLog:
    def test_two_processes_appending_2000_lines_each_leave_4000_whole_json_lines(
        self, engine_log: Path, tmp_path: Path
    ) -> None:
        go = tmp_path / "go"
        readies = [tmp_path / f"ready-{name}" for name in ("a", "b")]
        writers = [
            subprocess.Popen(
                [sys.executable, "-c", WRITER, str(engine_log), str(ready), str(go), ready.name]
            )
            for ready in readies
        ]
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in readies) and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()
        assert [w.wait(timeout=120) for w in writers] == [0, 0]

        lines = read_lines(engine_log)

        assert len(lines) == 4000
        for name in ("ready-a", "ready-b"):
            assert [ln["seq"] for ln in lines if ln["writer"] == name] == list(range(2000))

    def test_a_forked_worker_logs_to_engine_log_and_its_own_log_and_not_the_console(
        self, engine_log: Path, tmp_path: Path
    ) -> None:
        symbol_log = tmp_path / "logs" / "20261123Z" / "ETHUSDT" / "worker.log"
        with (tmp_path / "console.txt").open("w") as console:
            configure_logging(engine_log, "info", console="json", stream=console)
            get_logger().info(JOB_STARTED)
            worker = multiprocessing.get_context("fork").Process(
                target=_worker_main, args=(engine_log, symbol_log)
            )
            worker.start()
            worker.join(timeout=60)
            get_logger().info(JOB_COMPLETED)

        assert worker.exitcode == 0
        assert [ln["event"] for ln in read_lines(engine_log)] == [
            JOB_STARTED,
            COIN_STARTED,
            JOB_COMPLETED,
        ]
        assert [ln["symbol"] for ln in read_lines(symbol_log)] == ["ETHUSDT"]
        console_events = [ln["event"] for ln in read_lines(tmp_path / "console.txt")]
        assert console_events == [JOB_STARTED, JOB_COMPLETED]


def _worker_main(engine_log: Path, symbol_log: Path) -> None:
    configure_worker_logging(engine_log, symbol_log, "info")
    with bound_context(symbol="ETHUSDT", attempt=1):
        get_logger().info(COIN_STARTED)


class TestConsole:
    def test_off_a_terminal_the_console_gets_json_lines_without_escape_characters(
        self,
    ) -> None:
        console = io.StringIO()
        configure_logging(None, "info", console="auto", stream=console)

        get_logger(symbol="BTCUSDT").info(COIN_STARTED)

        assert ESC not in console.getvalue()
        assert json.loads(console.getvalue())["event"] == COIN_STARTED

    def test_pretty_output_off_a_terminal_has_no_escape_characters(self) -> None:
        console = io.StringIO()
        configure_logging(None, "info", console="pretty", stream=console)

        get_logger(symbol="BTCUSDT").warning(COIN_STARTED)

        assert COIN_STARTED in console.getvalue()
        assert ESC not in console.getvalue()

    def test_on_a_terminal_the_console_is_readable_text_not_json(self) -> None:
        console = TerminalStream()
        configure_logging(None, "info", console="auto", stream=console)

        get_logger(symbol="BTCUSDT").info(COIN_STARTED)

        assert COIN_STARTED in console.getvalue()
        assert "BTCUSDT" in console.getvalue()
        assert not console.getvalue().startswith("{")

    def test_console_off_writes_nothing(self, engine_log: Path) -> None:
        console = TerminalStream()
        configure_logging(engine_log, "info", console="off", stream=console)

        get_logger().info(JOB_STARTED)

        assert console.getvalue() == ""

    def test_a_worker_writes_nothing_to_the_console(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        configure_worker_logging(tmp_path / "engine.log", tmp_path / "BTC" / "worker.log", "info")

        get_logger().info(COIN_STARTED)

        assert capsys.readouterr() == ("", "")
        assert read_lines(tmp_path / "BTC" / "worker.log")[0]["event"] == COIN_STARTED


class TestRedaction:
    @pytest.mark.parametrize(
        "key",
        [
            "token",
            "bot_token",
            "TELEGRAM_TOKEN",
            "secret",
            "aws_secret_access_key",
            "password",
            "db_passwd",
            "api_key",
            "apiKey",
            "X-Api-Key",
            "Authorization",
            "credentials",
        ],
    )
    def test_a_value_under_a_secret_looking_key_is_masked(self, engine_log: Path, key: str) -> None:
        configure_logging(engine_log, "info", console="off")

        get_logger().info("settings", **{key: "hunter2"})

        assert read_lines(engine_log)[0][key] == MASK
        assert "hunter2" not in engine_log.read_text()

    def test_secret_keys_are_masked_inside_nested_values_and_bound_context(
        self, engine_log: Path
    ) -> None:
        configure_logging(engine_log, "info", console="off")

        with bound_context(auth_token="hunter2"):
            get_logger().info("settings", notify={"kind": "telegram", "bot_token": "hunter3"})

        (line,) = read_lines(engine_log)
        assert line["auth_token"] == MASK
        assert line["notify"] == {"kind": "telegram", "bot_token": MASK}

    def test_a_telegram_token_inside_any_text_is_masked(self, engine_log: Path) -> None:
        configure_logging(engine_log, "info", console="off")
        url = f"https://api.telegram.org/bot{TELEGRAM_TOKEN}/sendMessage"

        get_logger().info(f"POST {url} failed", url=url, errors=[url])

        text = engine_log.read_text()
        assert TELEGRAM_TOKEN not in text
        assert "https://api.telegram.org/bot***/sendMessage" in text

    def test_an_aws_secret_key_inside_any_text_is_masked(self, engine_log: Path) -> None:
        configure_logging(engine_log, "info", console="off")

        get_logger().info("s3", detail=f"signing with {AWS_SECRET} failed")

        assert read_lines(engine_log)[0]["detail"] == "signing with *** failed"

    def test_secrets_in_an_exception_message_are_masked(self, engine_log: Path) -> None:
        configure_logging(engine_log, "info", console="off")

        try:
            raise ConnectionError(f"bad token {TELEGRAM_TOKEN}")
        except ConnectionError as exc:
            get_logger().exception("notify_failed", error=exc)

        assert TELEGRAM_TOKEN not in engine_log.read_text()

    def test_the_console_is_redacted_too(self) -> None:
        console = TerminalStream()
        configure_logging(None, "info", console="auto", stream=console)

        get_logger().info("settings", password="hunter2", note=TELEGRAM_TOKEN)

        assert "hunter2" not in console.getvalue()
        assert TELEGRAM_TOKEN not in console.getvalue()

    @pytest.mark.parametrize(
        "harmless",
        [
            "0123456789abcdef0123456789abcdef01234567",  # a git sha: 40 hex characters
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",  # a sha256
            "models/BTCUSDT/20261123_020000Z/model.bin",
            "file:///tmp/fresh/mirror/runs/20261123Z/costs.json",  # a 40-character base64 run
            "2026-11-23T02:00:00.123456Z",
            "1700000000:12",
        ],
    )
    def test_ordinary_values_are_left_alone(self, harmless: str) -> None:
        assert redact_text(harmless) == harmless

    def test_a_long_blob_is_scanned_quickly(self) -> None:
        started = time.monotonic()
        redact_text("A1b" * 200_000 + "1" * 200_000)
        assert time.monotonic() - started < 1.0
