"""`retrainer status`: a run's progress read from its ledger, from any shell.

The ledger is written by the running job (journal lines fsynced, snapshot at most once a
second); this module only reads it, so it never disturbs the run and needs no lock.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.live import Live

from retrainer.base.exitcodes import ExitCode
from retrainer.views.progress import headline, plain_line, render_view
from retrainer.views.runview import Phase, RunView, view_day

WATCH_INTERVAL_S = 1.0


def show_status(
    root: Path,
    day: str | None,
    *,
    watch: bool,
    as_json: bool,
    console: Console,
    interval_s: float = WATCH_INTERVAL_S,
) -> ExitCode:
    try:
        if not watch:
            _print_once(view_day(root, day), as_json, console)
        elif as_json or not console.is_terminal:
            _watch_lines(root, day, as_json, console, interval_s)
        else:
            _watch_live(root, day, console, interval_s)
    except KeyboardInterrupt:  # Ctrl-C ends a watch; the run itself goes on
        return ExitCode.INTERRUPTED
    return ExitCode.OK


def _print_once(view: RunView, as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps(view.to_dict()), flush=True)
    else:
        console.print(render_view(view))


def _watch_lines(
    root: Path, day: str | None, as_json: bool, console: Console, interval_s: float
) -> None:
    """Scripts and logs: a JSON object or a plain line each time something changed."""
    last = None
    while True:
        view = view_day(root, day)
        key = _changes(view)
        if key != last:
            print(json.dumps(view.to_dict()) if as_json else plain_line(view), flush=True)
            last = key
        if view.phase is not Phase.RUNNING:
            if not as_json:
                console.print(headline(view), markup=False, highlight=False, soft_wrap=True)
            return
        time.sleep(interval_s)


def _changes(view: RunView) -> str:
    """What makes a new line worth printing: counts and who runs (not the clock)."""
    return json.dumps(
        [
            view.done,
            view.failed,
            view.retrying,
            view.skipped,
            view.interrupted,
            view.queued,
            [r.symbol for r in view.running],
            view.phase.value,
        ]
    )


def _watch_live(root: Path, day: str | None, console: Console, interval_s: float) -> None:
    view = view_day(root, day)
    with Live(render_view(view), console=console, auto_refresh=False) as live:
        while view.phase is Phase.RUNNING:
            time.sleep(interval_s)
            view = view_day(root, day)
            live.update(render_view(view), refresh=True)
