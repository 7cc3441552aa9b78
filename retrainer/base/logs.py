"""One logging setup (structlog) and the event names the logs promise to keep.

Every event is one JSON line (timestamp in ISO UTC, level, event, then the bound context)
in engine.log, and is shown on the console: readable on a terminal, JSON lines elsewhere,
never colour codes off a terminal. The scheduler and its item processes append to the same
engine.log: each line is one os.write on an O_APPEND descriptor, so lines never interleave.
An item's child process calls `configure_worker_logging` after the fork to add its own log.

Context (run_id, symbol, attempt) is bound through structlog.contextvars:

    with bound_context(run_id=run_id, symbol="BTCUSDT", attempt=2):
        get_logger().info(COIN_STARTED, timeout_s=2700)

Secrets never reach a line: `redact_secrets` masks values under secret-looking keys and
token-shaped strings, exception text included.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal, Protocol, TextIO, cast

import structlog
from structlog.contextvars import bind_contextvars as bind_context
from structlog.contextvars import bound_contextvars as bound_context
from structlog.contextvars import clear_contextvars as clear_context
from structlog.contextvars import unbind_contextvars as unbind_context
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from retrainer.base.errors import BadInputError

__all__ = [
    "COIN_FAILED",
    "COIN_PARTIAL_SAVED",
    "COIN_PREPARED",
    "COIN_RETRY_SCHEDULED",
    "COIN_SKIPPED",
    "COIN_STARTED",
    "COIN_SUCCEEDED",
    "COIN_TIMEOUT",
    "DEADLINE_AT_RISK",
    "DEADLINE_PASSED",
    "EVENTS",
    "JOB_COMPLETED",
    "JOB_NOT_STARTED",
    "JOB_STARTED",
    "MASK",
    "RETRY_BUDGET_SPENT",
    "SYMBOLS_UNRANKED",
    "UPLOAD_FAILED",
    "UPLOAD_SUCCEEDED",
    "ConsoleMode",
    "bind_context",
    "bound_context",
    "clear_context",
    "close_logging",
    "configure_logging",
    "configure_worker_logging",
    "get_logger",
    "is_secret_key",
    "redact_secrets",
    "redact_text",
    "render_json",
    "unbind_context",
]

# Event names: a contract with whoever reads the logs. Add new ones; never rename.
JOB_STARTED: Final = "job_started"
COIN_STARTED: Final = "coin_started"
COIN_PARTIAL_SAVED: Final = "coin_partial_saved"
COIN_SUCCEEDED: Final = "coin_succeeded"
# Two stages: an item's prepare attempt succeeded; it waits for a train slot.
COIN_PREPARED: Final = "coin_prepared"
COIN_FAILED: Final = "coin_failed"
COIN_RETRY_SCHEDULED: Final = "coin_retry_scheduled"
COIN_TIMEOUT: Final = "coin_timeout"
COIN_SKIPPED: Final = "coin_skipped"
UPLOAD_SUCCEEDED: Final = "upload_succeeded"
UPLOAD_FAILED: Final = "upload_failed"
JOB_COMPLETED: Final = "job_completed"
# A `retrainer run` that ended before its night started (exit code, stage, reason).
JOB_NOT_STARTED: Final = "job_not_started"
# topN left files out of its ranking because they cannot be read (symbol -> problem).
SYMBOLS_UNRANKED: Final = "symbols_unranked"
# The run's retry budget ran out: failed items left without a retry (count, symbols).
RETRY_BUDGET_SPENT: Final = "retry_budget_spent"
# [run] deadline passed: nothing more starts; the running items get the stop grace.
DEADLINE_PASSED: Final = "deadline_passed"
# The night's forecast finishes after [run] deadline (said at its start).
DEADLINE_AT_RISK: Final = "deadline_at_risk"
EVENTS: Final = (
    DEADLINE_AT_RISK,
    DEADLINE_PASSED,
    JOB_STARTED,
    COIN_STARTED,
    COIN_PARTIAL_SAVED,
    COIN_SUCCEEDED,
    COIN_PREPARED,
    COIN_FAILED,
    COIN_RETRY_SCHEDULED,
    COIN_TIMEOUT,
    COIN_SKIPPED,
    UPLOAD_SUCCEEDED,
    UPLOAD_FAILED,
    JOB_COMPLETED,
    JOB_NOT_STARTED,
    SYMBOLS_UNRANKED,
    RETRY_BUDGET_SPENT,
)

ConsoleMode = Literal["auto", "json", "pretty", "off"]
LEVELS: Final = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
# The first keys of every JSON line, so that a line reads left to right.
LEADING_KEYS: Final = ("timestamp", "level", "event")

# ---------------------------------------------------------------------------- redaction

MASK: Final = "***"
SECRET_KEY_PARTS: Final = (
    "token",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "authorization",
    "credential",
)
# A Telegram bot token: <bot id>:<35-odd url-safe characters>, also inside a URL.
TELEGRAM_TOKEN: Final = re.compile(r"(?<!\d)\d{6,}:[A-Za-z0-9_-]{30,}")
# A run of exactly 40 base64 characters: an AWS secret access key if it mixes upper case,
# lower case and digits (a 40-hex git sha, all lower case, does not). The look-arounds
# anchor the match at a run's start, which keeps long runs (a blob) linear to scan.
BASE64_RUN_OF_40: Final = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])")


# The shortest text either pattern can match: a bot id of 6 digits, ':' and 30 characters.
_SHORTEST_SECRET: Final = 37


def is_secret_key(name: object) -> bool:
    return _is_secret_key_text(str(name))


@functools.lru_cache(maxsize=4096)  # every line repeats the same few dozen keys
def _is_secret_key_text(name: str) -> bool:
    normalised = name.lower().replace("-", "_")
    return any(part in normalised for part in SECRET_KEY_PARTS)


def redact_text(text: str) -> str:
    """Mask every token-shaped substring of text."""
    if len(text) < _SHORTEST_SECRET:  # most values: a symbol, a time, an event name
        return text
    text = TELEGRAM_TOKEN.sub(MASK, text)
    return BASE64_RUN_OF_40.sub(_mask_if_aws_secret, text)


def _mask_if_aws_secret(match: re.Match[str]) -> str:
    run = match.group()
    mixed = (
        any(c.isupper() for c in run)
        and any(c.islower() for c in run)
        and any(c.isdigit() for c in run)
    )
    # A path (file:///tmp/.../20261123Z/costs.json) can be such a run too; a random key
    # does not start with a slash and seldom holds more than two.
    path_like = run.startswith("/") or run.count("/") > 2
    return MASK if mixed and not path_like else run


def _redact_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # a loss gone NaN: strict JSON has no NaN, so say it as text
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping):
        # Keys as text: a line must always render as JSON, whatever the caller passed.
        return {str(k): MASK if is_secret_key(k) else _redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(v) for v in value]
    # Anything else is rendered as text anyway (an exception, a URL, a path): mask that.
    return redact_text(str(value))


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: no secret leaves in a log line, whatever the caller passed."""
    return cast(EventDict, _redact_value(event_dict))


# ---------------------------------------------------------------------------- sinks


def render_json(event: EventDict) -> str:
    """One event as one line of JSON, timestamp, level and event first."""
    ordered = {key: event[key] for key in LEADING_KEYS if key in event} | dict(event)
    return json.dumps(ordered, default=str)


class _Sink(Protocol):
    name: str

    def write(self, event: EventDict) -> None: ...

    def close(self) -> None: ...


class _AppendFileSink:
    """JSON lines appended to a file that other processes may be appending to as well."""

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise BadInputError(f"log file {path}: cannot be opened ({exc.strerror})") from None

    def write(self, event: EventDict) -> None:
        if self._fd is not None:
            _write_line(self._fd, (render_json(event) + "\n").encode("utf-8"))

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)


def _write_line(fd: int, data: bytes) -> None:
    # O_APPEND makes one write land whole at the end of the file, whoever else appends.
    # A short write (disk full, a signal) is completed rather than lost.
    written = os.write(fd, data)
    while written < len(data):
        written += os.write(fd, data[written:])


class _StreamSink:
    """Lines to a text stream (the console), rendered by the given function."""

    def __init__(self, stream: TextIO, render: Callable[[EventDict], str]) -> None:
        self.name = getattr(stream, "name", "console")
        self._stream = stream
        self._render = render

    def write(self, event: EventDict) -> None:
        # Renderers may pop keys: each sink gets its own copy.
        self._stream.write(self._render(dict(event)) + "\n")
        self._stream.flush()

    def close(self) -> None:
        """The stream belongs to whoever passed it in: leave it open."""


def _console_sink(mode: ConsoleMode, stream: TextIO) -> _Sink | None:
    if mode == "off":
        return None
    on_terminal = _is_terminal(stream)
    if mode == "json" or (mode == "auto" and not on_terminal):
        return _StreamSink(stream, render_json)
    return _StreamSink(stream, _console_renderer(colors=on_terminal))


# Keys structlog's ConsoleRenderer prints as preformatted text below the line and expects
# to be text: our events may carry them as lists (coin_failed's `stack`, the last frames of
# the trainer's traceback) and a trainer's own events as anything.
PREFORMATTED_KEYS: Final = ("stack", "exception")


def _console_renderer(colors: bool) -> Callable[[EventDict], str]:
    """A readable line (structlog's ConsoleRenderer); an event it cannot render still
    reaches the console, as its JSON line."""
    renderer = structlog.dev.ConsoleRenderer(colors=colors)

    def render(event: EventDict) -> str:
        try:
            return renderer(None, "", _as_console_text(dict(event)))
        except Exception:
            return render_json(event)

    return render


def _as_console_text(event: EventDict) -> EventDict:
    for key in PREFORMATTED_KEYS:
        value = event.get(key)
        if value is None or isinstance(value, str):
            continue
        lines = value if isinstance(value, list | tuple) else [value]
        if lines:  # one indented line each, under the event's line
            event[key] = "\n".join(f"    {line}" for line in lines)
        else:
            del event[key]
    return event


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class _Router:
    """The one logger structlog writes to: each event goes to every configured sink."""

    def __init__(self) -> None:
        self.sinks: tuple[_Sink, ...] = ()
        self._failed: set[str] = set()

    def emit(self, event: EventDict) -> None:
        for sink in self.sinks:
            try:
                sink.write(event)
            except Exception as exc:
                # A full disk, a closed console or an odd value must not fail an item.
                self._report_once(sink, exc)

    # structlog calls the method named after the event's level.
    debug = info = warning = warn = error = critical = fatal = exception = msg = emit

    def _report_once(self, sink: _Sink, exc: Exception) -> None:
        if sink.name in self._failed or sys.__stderr__ is None:
            return
        self._failed.add(sink.name)
        print(
            f"retrainer: cannot write the log to {sink.name} ({exc}); "
            "further failures there are not reported",
            file=sys.__stderr__,
        )

    def replace_sinks(self, sinks: Iterable[_Sink]) -> None:
        old, self.sinks = self.sinks, tuple(sinks)
        self._failed.clear()
        for sink in old:
            sink.close()


# Loggers bound before a re-configuration keep writing through the same router, so they
# follow the new sinks (the child process after the fork) instead of closed files.
_ROUTER: Final = _Router()


def _to_router(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> Any:
    return (event_dict,), {}


def _add_pid(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    # Several processes share engine.log: say which one wrote each line.
    event_dict.setdefault("pid", os.getpid())
    return event_dict


# ---------------------------------------------------------------------------- setup


def configure_logging(
    engine_log: Path | None,
    level: str,
    console: ConsoleMode = "auto",
    stream: TextIO | None = None,
) -> None:
    """Log to engine_log (JSON lines, appended) and to the console (stream, or stderr).

    May be called again: the new files and console replace the previous ones.
    """
    min_level = _level_number(level)
    sinks = _open_files([] if engine_log is None else [engine_log])
    console_sink = _console_sink(console, sys.stderr if stream is None else stream)
    if console_sink is not None:
        sinks.append(console_sink)
    _install(sinks, min_level)


def configure_worker_logging(engine_log: Path, symbol_log: Path, level: str) -> None:
    """An item's child process: JSON lines to engine.log and its own log, no console."""
    min_level = _level_number(level)
    _install(_open_files([engine_log, symbol_log]), min_level)


def close_logging() -> None:
    """Close the log files; events logged afterwards go nowhere until configured again."""
    _ROUTER.replace_sinks(())


def get_logger(**bind: Any) -> FilteringBoundLogger:
    """A logger carrying bind as context (on top of the contextvars context)."""
    return cast(FilteringBoundLogger, structlog.get_logger(**bind))


def _open_files(paths: list[Path]) -> list[_Sink]:
    sinks: list[_Sink] = []
    try:
        for path in paths:
            sinks.append(_AppendFileSink(path))
    except BaseException:
        for sink in sinks:
            sink.close()
        raise
    return sinks


def _level_number(level: str) -> int:
    try:
        return LEVELS[level.lower()]
    except KeyError:
        raise BadInputError(
            f"logging level {level!r} is unknown (known: {', '.join(LEVELS)})"
        ) from None


def _install(sinks: list[_Sink], min_level: int) -> None:
    _ROUTER.replace_sinks(sinks)
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        _add_pid,
        # Tracebacks become text here, before redaction, so that they are redacted too.
        structlog.processors.format_exc_info,
        redact_secrets,
        _to_router,
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=lambda *args: _ROUTER,
        context_class=dict,
        cache_logger_on_first_use=False,
    )
