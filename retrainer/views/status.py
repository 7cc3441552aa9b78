"""`retrainer status`: a run's progress read from its ledger, from any shell.

The ledger is written by the running job (journal lines fsynced, snapshot at most once a
second); this module only reads it, so it never disturbs the run and needs no lock.

Its exit code says whether the run it shows is well (docs/operations.md#exit-codes): 0
while it runs or when it finished with exit 0, 1 when it finished otherwise, died, or did
not start; `--check` also fails a latest run older than its age limit, on one line.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from pathlib import Path

from rich.console import Console
from rich.live import Live

from retrainer.base.clock import now_utc
from retrainer.base.exitcodes import ExitCode, meaning
from retrainer.views.progress import counts_text, headline, one_line, plain_line, render_view
from retrainer.views.runview import Phase, RunView, hms, parse_iso, view_day

WATCH_INTERVAL_S = 1.0
# `--check`'s verdict is one line of a mail or a monitoring check: the JSON has everything.
VERDICT_CHARS = 400


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
            view = view_day(root, day)
            _print_once(view, as_json, console)
        elif as_json or not console.is_terminal:
            view = _watch_lines(root, day, as_json, console, interval_s)
        else:
            view = _watch_live(root, day, console, interval_s)
    except KeyboardInterrupt:  # Ctrl-C ends a watch; the run itself goes on
        return ExitCode.INTERRUPTED
    return status_code(view)


def status_code(view: RunView) -> ExitCode:
    """0 while the run goes or when it finished with exit 0; 1 for any other end."""
    if view.phase is Phase.RUNNING or (view.phase is Phase.FINISHED and view.exit_code == 0):
        return ExitCode.OK
    return ExitCode.SOME_FAILED


def check_run(
    root: Path, day: str | None, max_age_h: float, now: datetime | None = None
) -> tuple[ExitCode, str]:
    """`status --check`: the verdict on one line, for monitoring and the cron mail. The
    latest run (of the latest day, unless `day` names one) must be well and, when no day
    is named, have started within max_age_h: a night that never ran fails too."""
    now = now or now_utc()
    view = view_day(root, day, now)
    code = status_code(view)
    age_h = (now - parse_iso(view.started_at)).total_seconds() / 3600.0
    if code is ExitCode.OK and day is None and age_h > max_age_h:
        return ExitCode.SOME_FAILED, (
            f"FAILED: the latest run, {view.day} ({view.run_id}), started {age_h:.1f} h ago: "
            f"no run since, and --max_age_hours is {max_age_h:g}"
        )
    return code, ("OK: " if code is ExitCode.OK else "FAILED: ") + _verdict(view)


def _verdict(view: RunView) -> str:
    run = f"run {view.day} ({view.run_id})"
    code = f"exit {view.exit_code} ({meaning(view.exit_code)})"
    if view.phase is Phase.DID_NOT_START:
        return one_line(f"{run} did not start: {code}: {view.reason}")[:VERDICT_CHARS]
    if view.phase is Phase.RUNNING:
        state = f"running for {hms(view.elapsed_s)}"
    elif view.phase is Phase.DEAD:
        state = "died: no finish recorded and its process is gone"
    else:
        state = f"finished {view.finished_at}, {code}"
    failures = "; ".join(f"{f.symbol}: {f.reason}" for f in view.failures[:3])
    tail = f"; {failures}" if failures else ""
    if view.reason and view.phase is not Phase.RUNNING:
        tail += f"; {view.reason}"
    return one_line(f"{run} {state}: {counts_text(view)}{tail}")[:VERDICT_CHARS]


def _print_once(view: RunView, as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps(view.to_dict()), flush=True)
    else:
        console.print(render_view(view))


def _watch_lines(
    root: Path, day: str | None, as_json: bool, console: Console, interval_s: float
) -> RunView:
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
            return view
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
            view.not_started,
            view.queued,
            [r.symbol for r in view.running],
            view.phase.value,
        ]
    )


def _watch_live(root: Path, day: str | None, console: Console, interval_s: float) -> RunView:
    view = view_day(root, day)
    with Live(render_view(view), console=console, auto_refresh=False) as live:
        while view.phase is Phase.RUNNING:
            time.sleep(interval_s)
            view = view_day(root, day)
            live.update(render_view(view), refresh=True)
    return view
