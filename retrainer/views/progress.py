"""How a run's progress is shown: a rich view on a terminal, plain lines elsewhere.

`live_progress` wraps the runner's loop. It never touches the loop: a thread of its own
copies the ledger's entries and redraws (rich Live on a terminal) or prints a plain line
when something finished (cron, systemd, a pipe: no control characters). `retrainer
status` uses the same renderers.
"""

from __future__ import annotations

import contextlib
import io
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO, cast

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from retrainer.base.clock import now_utc
from retrainer.base.exitcodes import meaning
from retrainer.base.logs import configure_logging
from retrainer.ledger.journal import Ledger
from retrainer.views.runview import STAGE_WORDS, Phase, RunView, build_view, hms

PLAIN_INTERVAL_S = 60.0  # off a terminal: at most one progress line a minute...
PLAIN_POLL_S = 1.0  # ...checked this often, printed only when something finished
LIVE_REFRESH_PER_S = 2.0
MAX_RUNNING_IN_LINE = 8


def counts_text(view: RunView) -> str:
    parts = [
        f"{view.done}/{view.total} done",
        f"{len(view.running)} running",
        f"{view.failed} failed",
    ]
    if view.retrying:
        parts.append(f"{view.retrying} retrying")
    parts.append(f"{view.skipped} skipped")
    if view.interrupted:
        parts.append(f"{view.interrupted} interrupted")
    if view.not_started:
        parts.append(f"{view.not_started} not started")
    if view.queued:
        parts.append(f"{view.queued} queued")
    return ", ".join(parts)


def headline(view: RunView) -> str:
    if view.phase is Phase.DID_NOT_START:
        return not_started_text(view)
    phase = view.phase.value
    if view.phase is Phase.FINISHED:
        phase = f"finished {view.finished_at} (exit {view.exit_code})"
    elif view.phase is Phase.DEAD:
        phase = "died: no finish recorded and its process is gone"
    eta = f", ETA {hms(view.eta_s)}" if view.phase is Phase.RUNNING else ""
    return (
        f"run {view.day} ({view.run_id}, {view.mode}, {view.window} at a time): {phase}\n"
        f"{counts_text(view)}; elapsed {hms(view.elapsed_s)}{eta}"
    )


def not_started_text(view: RunView) -> str:
    """A run that stopped before its night started: when, how far, why; then the day's
    latest run that did start, whose models are still the latest."""
    stage = STAGE_WORDS.get(view.stage or "", "")
    lines = [
        f"run {view.day} ({view.run_id}): did not start: exit {view.exit_code} "
        f"({meaning(view.exit_code)}) at {view.finished_at}{' ' + stage if stage else ''}",
        f"why: {view.reason or 'no reason recorded'}",
    ]
    if view.previous is not None:
        earlier = headline(view.previous).replace("\n", "; ")
        lines.append(f"the latest run today that started: {earlier}")
    else:
        lines.append("no run started today")
    return "\n".join(lines)


def one_line(text: str) -> str:
    return " ".join(text.split())


def plain_line(view: RunView) -> str:
    """One line for logs: counts, elapsed, ETA and the running symbols."""
    if view.phase is Phase.DID_NOT_START:
        return one_line(f"did not start: exit {view.exit_code}: {view.reason}")
    running = ", ".join(
        f"{r.symbol} {hms(r.elapsed_s)}" for r in view.running[:MAX_RUNNING_IN_LINE]
    )
    if len(view.running) > MAX_RUNNING_IN_LINE:
        running += f", +{len(view.running) - MAX_RUNNING_IN_LINE} more"
    line = f"progress: {counts_text(view)}; elapsed {hms(view.elapsed_s)}, ETA {hms(view.eta_s)}"
    searches = "; ".join(s.text for s in view.searches)
    return (
        line + (f"; {searches}" if searches else "") + (f"; running {running}" if running else "")
    )


def render_view(view: RunView) -> RenderableType:
    """The headline, a row per running symbol, a row per failure with its reason."""
    parts: list[RenderableType] = [Text(headline(view))]
    parts += [Text(search.text) for search in view.searches]  # one line per searched symbol
    if view.running:
        table = Table(title="running", title_justify="left")
        for name in ("symbol", "attempt", "elapsed", "device", "slot"):
            table.add_column(name)
        for r in sorted(view.running, key=lambda r: -r.elapsed_s):
            table.add_row(
                r.symbol,
                str(r.attempt),
                hms(r.elapsed_s),
                r.device,
                "" if r.slot is None else str(r.slot),
            )
        parts.append(table)
    if view.failures:
        table = Table(title="failures", title_justify="left")
        for name in ("symbol", "state", "attempts", "reason"):
            table.add_column(name, overflow="fold")
        for f in view.failures:
            state = f"{f.state} (retrying)" if f.retrying else f.state
            table.add_row(f.symbol, state, str(f.attempts), Text(f.reason))  # "[data]" kept
        parts.append(table)
    return Group(*parts)


class _AboveLive(io.TextIOBase):
    """A stream for the log's console lines: printed above the live view, colours kept."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def isatty(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text.strip():
            self._console.print(Text.from_ansi(text.rstrip("\n")))
        return len(text)


class _PlainReporter:
    """Off a terminal: a progress line when items finished, spaced by PLAIN_INTERVAL_S."""

    def __init__(self, view: Callable[[], RunView], console: Console, interval_s: float):
        self._view, self._console, self._interval_s = view, console, interval_s
        self._stop = threading.Event()
        self._printed: tuple[int, ...] | None = None
        self._last = -interval_s
        self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._tick(final=True)

    def _loop(self) -> None:
        while not self._stop.wait(PLAIN_POLL_S):
            self._tick(final=False)

    def _tick(self, final: bool) -> None:
        view = self._view()
        key = (view.done, view.failed, view.retrying, view.interrupted, view.not_started)
        if key == self._printed or (view.done + view.failed + view.retrying == 0):
            return
        if final or time.monotonic() - self._last >= self._interval_s:
            self._console.print(plain_line(view), markup=False, highlight=False, soft_wrap=True)
            self._printed, self._last = key, time.monotonic()


@contextlib.contextmanager
def live_progress(
    ledger: Ledger,
    run: Mapping[str, Any],
    day: str,
    console: Console,
    engine_log: Path,
    log_level: str,
    plain_interval_s: float = PLAIN_INTERVAL_S,
) -> Iterator[None]:
    """Show the run's progress while the block (the runner's loop) runs."""
    run = dict(run)

    def view() -> RunView:
        return build_view(day, run, ledger.entries, now_utc(), alive=True, until=None)

    if not console.is_terminal:
        reporter = _PlainReporter(view, console, plain_interval_s)
        reporter.start()
        try:
            yield
        finally:
            reporter.stop()
        return
    live = Live(
        get_renderable=lambda: render_view(view()),
        console=console,
        refresh_per_second=LIVE_REFRESH_PER_S,
        redirect_stdout=False,
        redirect_stderr=False,
    )
    logs_on_terminal = sys.stderr.isatty()
    live.start()
    if logs_on_terminal:  # the log's console lines scroll above the live view
        configure_logging(engine_log, log_level, stream=cast(TextIO, _AboveLive(console)))
    try:
        yield
    finally:
        live.stop()
        if logs_on_terminal:
            configure_logging(engine_log, log_level)
