"""Every event the code logs renders on a terminal: the console renderer never drops a line.

The events are found in the package's source (every `log.<level>("name", …)` and every
trainer `emit("name", …)`), each logged with realistic values for the fields it passes,
through the console sink a terminal gets; and through the real `retrainer run` on a
pseudo-terminal, a failed symbol's line is printed.
"""

from __future__ import annotations

import ast
import fcntl
import io
import json
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from retrainer.base.logs import (
    PREFORMATTED_KEYS,
    _console_renderer,
    configure_logging,
    get_logger,
)
from tests.conftest import REPO, cli_env, write_config

PACKAGE = REPO / "retrainer"
LEVELS = ("debug", "info", "warning", "error", "critical", "exception")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
STACK = ["worker.py:160 in _run_trainer", "plugins.py:86 in _raise", "plugins.py:80 in boom"]

# Realistic values of the fields the code passes, by name. A field named here is logged
# with this value; a field not named gets a value guessed from its name (see _value).
FIELDS: dict[str, Any] = {
    "symbol": "BTCUSDT",
    "attempt": 2,
    "attempts": 3,
    "pid": 41234,
    "pids": [41240, 41241],
    "device": "cpu",
    "threads": 4,
    "slot": 1,
    "artifact_dir": "models/BTCUSDT/20261123_020000Z",
    "minutes": 1.2345,
    "metrics": {"net_sharpe": 1.21, "accuracy": 0.53, "gross_sharpe": float("nan")},
    "state": "failed",
    "reason": "ValueError: boom from BTCUSDT",
    "error_type": "ValueError",
    "error": "OSError: [Errno 28] No space left on device",
    "exit_code": 3,
    "stack": STACK,
    "exception": "Traceback (most recent call last):\n  ...\nValueError: boom",
    "will_retry": True,
    "retry": 1,
    "delay_s": 4.217,
    "why": "already succeeded today (20261123_020000Z)",
    "signal": "SIGTERM",
    "running": 2,
    "queued": 5,
    "grace_s": 30.0,
    "startup_ms": 41.5,
    "bytes": 1048576,
    "wall_minutes": 12.5,
    "succeeded": 18,
    "failed": 2,
    "skipped": 0,
    "interrupted": 0,
    "not_started": 0,
    "day": "20261123Z",
    "days": ["20261121Z", "20261122Z"],
    "uploaded": 42,
    "still_pending": 0,
    "unsyncable": 1,
    "key": "retrainer/models/BTCUSDT/20261123_020000Z/model.bin",
    "uri": "s3://models/retrainer/models/BTCUSDT/20261123_020000Z/model.bin",
    "seconds": 0.731,
    "what": "run_finished",
    "kind": "telegram",
    "notifier": "webhook",
    "listener": "UploadListener",
    "hook": "item_succeeded",
    "path": "/var/lib/node_exporter/textfile_collector/retrainer.prom",
    "artifact": "features.parquet",
    "source": "models/BTCUSDT/20261123_020000Z/features.parquet",
    "epochs": 14,
    "best_epoch": 9,
    "stage": "lock",
    "sent": 3,
    "written": 1,
}
# Fields a `**mapping` passes: job_started logs the run record, notify_closed its counts.
SPREAD: dict[str, dict[str, Any]] = {
    "job_started": {
        "pid": 41234,
        "host": "trainer-1",
        "started_at": "2026-11-23T02:00:00.000Z",
        "mode": "hybrid",
        "driver": "local",
        "max_concurrent": 2,
        "window": 2,
        "threads_per_item": 4,
        "force": False,
        "resources": {"cpus": 8, "gpus": [], "memory_mb": 32000},
        "trainer": "retrainer.training.trainer:train",
        "symbols": 20,
        "to_run": 18,
        "to_skip": 2,
        "retries": 2,
    },
    "notify_closed": {"sent": 3, "failed": 1},
}
# The keys structlog's ConsoleRenderer treats specially: they need a realistic value here.
SPECIAL = {*PREFORMATTED_KEYS, "exc_info", "timestamp", "level", "logger", "logger_name"}


@dataclass(frozen=True)
class Emitted:
    where: str
    level: str
    event: str
    fields: tuple[str, ...]
    spread: bool  # passes **mapping as well


def _constants() -> dict[str, str]:
    """Module-level string constants of the package (event names such as COIN_FAILED)."""
    found: dict[str, str] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.parse(path.read_text("utf-8")).body:
            target = value = None
            if isinstance(node, ast.Assign) and len(node.targets) == 1:
                target, value = node.targets[0], node.value
            elif isinstance(node, ast.AnnAssign):
                target, value = node.target, node.value
            if (
                isinstance(target, ast.Name)
                and isinstance(value, ast.Constant)
                and isinstance(value.value, str)
            ):
                found.setdefault(target.id, value.value)
    return found


def emitted_events() -> list[Emitted]:
    """Every log call and trainer emit in the package whose event name is known."""
    constants = _constants()
    events: list[Emitted] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in (*LEVELS, "emit")
                and node.args
            ):
                continue
            for name in _names(node.args[0], constants):
                events.append(
                    Emitted(
                        where=f"{path.relative_to(REPO)}:{node.lineno}",
                        level="info" if node.func.attr == "emit" else node.func.attr,
                        event=name,
                        fields=tuple(k.arg for k in node.keywords if k.arg is not None),
                        spread=any(k.arg is None for k in node.keywords),
                    )
                )
    return events


def _names(first: ast.expr, constants: dict[str, str]) -> list[str]:
    """The event names a call's first argument can be: a literal, a constant, or either
    branch of `A if … else B`; none for a pass-through (the worker's emit, whose events
    are found at the trainer's own emit calls)."""
    if isinstance(first, ast.Constant) and isinstance(first.value, str):
        return [first.value]
    if isinstance(first, ast.Name) and first.id in constants:
        return [constants[first.id]]
    if isinstance(first, ast.IfExp):
        return _names(first.body, constants) + _names(first.orelse, constants)
    return []


def _value(field: str) -> Any:
    if field in FIELDS:
        return FIELDS[field]
    if field.endswith("_s") or field.endswith("_seconds"):
        return 2.5
    if field.endswith("_ms"):
        return 12.0
    if field.endswith("_mb") or field.startswith("n_") or field.endswith("_count"):
        return 3
    if field.endswith("s") and not field.endswith("ss"):
        return ["BTCUSDT", "ETHUSDT"]
    return f"{field} value"


def realistic_fields(emitted: Emitted) -> dict[str, Any]:
    fields = {name: _value(name) for name in emitted.fields}
    if emitted.spread:
        fields.update(SPREAD.get(emitted.event, {"extra": "value"}))
    return fields


EMITTED = emitted_events()


class TerminalStream(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_source_logs_the_events_the_logs_promise_and_coin_failed_carries_its_stack() -> None:
    names = {e.event for e in EMITTED}
    assert {"job_started", "coin_started", "coin_failed", "job_completed"} <= names
    assert any("stack" in e.fields for e in EMITTED if e.event == "coin_failed")


def test_every_special_console_key_an_event_passes_has_a_realistic_value_here() -> None:
    passed = {f for e in EMITTED for f in e.fields} & SPECIAL
    assert passed <= set(FIELDS), f"give these fields a realistic value: {passed - set(FIELDS)}"


@pytest.mark.parametrize("colors", [True, False], ids=["terminal", "no-colours"])
@pytest.mark.parametrize("emitted", EMITTED, ids=[f"{e.event}@{e.where}" for e in EMITTED])
def test_every_event_the_code_logs_renders_on_the_console_with_its_fields(
    emitted: Emitted, colors: bool, capfd: pytest.CaptureFixture[str]
) -> None:
    console = TerminalStream() if colors else io.StringIO()
    configure_logging(None, "debug", console="pretty", stream=console)
    fields = realistic_fields(emitted)

    getattr(get_logger(run_id="20261123_020000Z-41234"), emitted.level)(emitted.event, **fields)

    text = ANSI.sub("", console.getvalue())
    assert not text.lstrip().startswith("{"), f"fell back to JSON: {text}"
    first, *below = text.rstrip("\n").split("\n")
    assert emitted.event in first
    for name in set(fields) - set(PREFORMATTED_KEYS):
        assert f"{name}=" in first, f"{name} missing from {first!r}"
    if "stack" in fields:  # the last frames, one indented line each under the event's line
        assert [line.strip() for line in below[: len(STACK)]] == STACK
    assert "cannot write the log" not in capfd.readouterr().err


def test_a_list_under_stack_is_shown_as_frames_and_engine_log_keeps_the_list(
    tmp_path: Path,
) -> None:
    console = TerminalStream()
    engine_log = tmp_path / "engine.log"
    configure_logging(engine_log, "info", console="auto", stream=console)

    get_logger(symbol="BTCUSDT").warning("coin_failed", reason="ValueError: boom", stack=STACK)

    lines = ANSI.sub("", console.getvalue()).splitlines()
    assert "coin_failed" in lines[0] and "symbol=BTCUSDT" in lines[0]
    assert lines[1:] == [f"    {frame}" for frame in STACK]
    assert json.loads(engine_log.read_text())["stack"] == STACK


def test_an_event_the_console_renderer_cannot_render_reaches_the_console_as_json() -> None:
    render = _console_renderer(colors=True)

    line = render({"event": "odd", "level": 5, "symbol": "BTCUSDT"})

    assert line == '{"level": 5, "event": "odd", "symbol": "BTCUSDT"}'


# ---------------------------------------------------------------------------- a terminal


def _read_all(fd: int, proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    """Everything the child writes to its terminal until it exits (and the pty drains)."""
    chunks: list[bytes] = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed its side of the terminal
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    return b"".join(chunks)


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal of 250 columns: (our side, the child's side)."""
    ours, theirs = pty.openpty()
    fcntl.ioctl(theirs, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 250, 0, 0))
    yield ours, theirs
    os.close(ours)


def test_on_a_terminal_a_failed_symbol_s_line_is_printed_and_the_console_log_keeps_going(
    tmp_path: Path, small_data: Path, terminal: tuple[int, int]
) -> None:
    symbols = sorted(p.stem for p in small_data.glob("*.parquet"))[:2]
    bad, good = symbols
    config = write_config(
        tmp_path / "tty.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": f"{bad},{good}", "retries": 0},
            "data": {"path": str(small_data)},
            "trainer": {
                "plugin": "tests.support.plugins:faulty",
                "params": {"pid_dir": str(tmp_path / "pids"), "behaviours": {bad: "raise"}},
            },
        },
    )
    ours, theirs = terminal
    env = cli_env({"TERM": "xterm-256color", "COLUMNS": "250", "LINES": "50"})
    proc = subprocess.Popen(
        [sys.executable, "-m", "retrainer", "run", "--config", str(config)],
        cwd=tmp_path,
        env=env,
        stdin=theirs,
        stdout=theirs,
        stderr=theirs,
        start_new_session=True,
    )
    os.close(theirs)
    try:
        output = _read_all(ours, proc, timeout_s=180).decode("utf-8", "replace")
        code = proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    text = ANSI.sub("", output)
    assert code == 1, text
    assert "cannot write the log to console" not in text
    (failed,) = [line for line in text.splitlines() if "coin_failed" in line]
    assert f"symbol={bad}" in failed and f"ValueError: boom from {bad}" in failed
    assert "in _raise" in text  # a frame of the trainer's traceback, under the line
    assert "job_completed" in text  # the console log went on after the failure
