"""A night shown on the console: the plan, live progress, the result line."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from rich.console import Console

from retrainer.ledger.journal import Ledger
from retrainer.plan.planner import Plan
from retrainer.views.display import print_plan, print_result
from retrainer.views.progress import live_progress


class NightConsole:
    """The NightReporter of `retrainer run` (retrainer.job.nightly)."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def plan(self, plan: Plan, dry_run: bool) -> None:
        print_plan(plan, self.console, dry_run=dry_run)

    def progress(
        self, ledger: Ledger, run: Mapping[str, Any], day: str, engine_log: Path, log_level: str
    ) -> AbstractContextManager[None]:
        return live_progress(ledger, run, day, self.console, engine_log, log_level)

    def result(self, summary: dict[str, Any], summary_path: Path) -> None:
        print_result(summary, summary_path, self.console)
