"""What every command of the `retrainer` CLI shares: the options that name a config and a
root, the run-day option, and the errors a user can fix turned into a message and an exit
code. The sub-apps (`retrainer batch`) import them from here, as app.py does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from retrainer.base.errors import BadInputError, LockedError
from retrainer.base.exitcodes import ExitCode


@contextlib.contextmanager
def _exit_codes() -> Iterator[None]:
    """Turn the errors a user can fix into a message and an exit code."""
    try:
        yield
    except BadInputError as exc:
        typer.echo(f"retrainer: {exc}", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT) from None
    except LockedError as exc:
        typer.echo(f"retrainer: {exc}", err=True)
        raise typer.Exit(ExitCode.LOCKED) from None
    except OSError as exc:  # the run's own folders: its items' I/O errors fail only them
        typer.echo(
            f"retrainer: cannot write the run's files ({exc}); the ledger keeps every "
            "transition recorded so far, and the next run resumes from it",
            err=True,
        )
        raise typer.Exit(ExitCode.IO_ERROR) from None
    except KeyboardInterrupt as exc:  # before a night's own handlers: it never started
        name = exc.args[0] if exc.args else "SIGINT"
        typer.echo(f"retrainer: stopped by {name}", err=True)
        raise typer.Exit(ExitCode.INTERRUPTED) from None


def _run_day_option(value: str | None) -> str | None:
    """Every --run: 20261201Z, 20261201 or 2026-12-01 name the same run; anything else is
    a bad flag (exit 2) naming the forms."""
    from retrainer.base.clock import parse_run_day

    if value is None:
        return None
    try:
        return parse_run_day(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


RUN_DAY_HELP = "The run's UTC day: 20261201Z, 20261201 or 2026-12-01."

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="TOML config file (default: $RETRAINER_CONFIG, else built-in defaults).",
        dir_okay=False,
    ),
]
RootOpt = Annotated[
    Path | None,
    typer.Option(
        "--root", help="Folder that holds runs/, logs/, summary/ and models/.", file_okay=False
    ),
]
