"""The `retrainer` command (Typer): run, verify, config init, data sample.

Flags named in the original design keep their underscore spelling and accept dashes too.
Bad input never produces a traceback: a one-paragraph message and a named exit code.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from retrainer.config import Mode, load_settings
from retrainer.errors import BadInputError, LockedError
from retrainer.exitcodes import ExitCode

app = typer.Typer(
    help="Nightly per-symbol model retraining: plan, train in isolated processes, verify, "
    "record. Exit codes: 0 ok, 1 some symbols failed, 2 bad input, 3 another run holds "
    "the lock, 130 interrupted, 70 internal error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Config files.", no_args_is_help=True)
data_app = typer.Typer(help="Data sets.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")


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


ConfigOpt = Annotated[
    Path | None,
    typer.Option("--config", help="TOML config file (default: $RETRAINER_CONFIG, else built-in "
                 "defaults).", dir_okay=False),
]
RootOpt = Annotated[
    Path | None,
    typer.Option("--root", help="Folder that holds runs/, logs/, summary/ and models/.",
                 file_okay=False),
]


@app.command()
def run(
    mode: Annotated[Mode | None, typer.Option(
        "--mode", help="sequential: one at a time; parallel: all at once, bounded by the "
        "machine; hybrid: a sliding window of --max_concurrent. (default: hybrid)",
        case_sensitive=False)] = None,
    max_concurrent: Annotated[int | None, typer.Option(
        "--max_concurrent", "--max-concurrent", min=1,
        help="Items at once in hybrid mode. (default: 12 with a GPU, 2 on CPU)")] = None,
    symbols: Annotated[str | None, typer.Option(
        "--symbols", help="topN (by median daily quote volume), A,B,C, or a CSV file. "
        "(default: top20)")] = None,
    timeout_minutes: Annotated[float | None, typer.Option(
        "--timeout_minutes", "--timeout-minutes",
        help="Per-attempt deadline; past it the item's process tree is killed. (default: 45)"
    )] = None,
    retries: Annotated[int | None, typer.Option(
        "--retries", help="Retries of a failed or timed-out item, with jittered exponential "
        "backoff. (default: 2)")] = None,
    force: Annotated[bool, typer.Option(
        "--force", help="Retrain every symbol, even those already done today.")] = False,
    driver: Annotated[str | None, typer.Option(
        "--driver", help="Where attempts run: local (child processes). (default: local)")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry_run", "--dry-run", help="Print the plan (run or skip, why, costs, "
        "concurrency) and write nothing.")] = False,
    config: ConfigOpt = None,
    root: RootOpt = None,
    data: Annotated[Path | None, typer.Option(
        "--data", help="Folder of OHLCV files, <SYMBOL>.parquet or <SYMBOL>.csv.",
        file_okay=False)] = None,
) -> None:
    """Run the nightly retraining job."""
    from retrainer.display import make_console
    from retrainer.job import run_job

    flags: dict[str, dict[str, Any]] = {
        "run": {"mode": mode, "max_concurrent": max_concurrent, "symbols": symbols,
                "timeout_minutes": timeout_minutes, "retries": retries, "driver": driver,
                "root": root},
        "data": {"path": data},
    }
    with _exit_codes():
        settings = load_settings(config, flags)
        code = run_job(settings, force=force, dry_run=dry_run, console=make_console())
    raise typer.Exit(code)


@app.command()
def verify(
    run_day: Annotated[str | None, typer.Option(
        "--run", help="The run's UTC day, YYYYMMDDZ. (default: today)")] = None,
    remote: Annotated[bool, typer.Option(
        "--remote", help="Check the configured storage's copies against sha256.txt "
        "instead of the local files.")] = False,
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Re-hash every successful symbol's artifacts of a run against its sha256.txt."""
    from retrainer.verify import verify_remote, verify_run

    with _exit_codes():
        settings = load_settings(config, {"run": {"root": root}})
        if remote:
            ok = verify_remote(settings.run.root.resolve(), run_day, _storage(settings))
        else:
            ok = verify_run(settings.run.root.resolve(), run_day)
    raise typer.Exit(ExitCode.OK if ok else ExitCode.SOME_FAILED)


@app.command()
def sync(
    run_day: Annotated[str | None, typer.Option(
        "--run", help="Only this UTC day, YYYYMMDDZ. (default: every day with uploads "
        "still pending)")] = None,
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Upload every artifact still pending to the configured storage, verified."""
    from retrainer.sync import run_sync

    with _exit_codes():
        settings = load_settings(config, {"run": {"root": root}})
        ok = run_sync(settings, _storage(settings), run_day)
    raise typer.Exit(ExitCode.OK if ok else ExitCode.SOME_FAILED)


def _storage(settings: Any) -> Any:
    from retrainer.storage.base import make_storage

    storage = make_storage(settings.storage)
    if storage is None:
        raise BadInputError('no storage is configured ([storage] kind = "none")')
    return storage


@config_app.command("init")
def config_init(
    path: Annotated[Path, typer.Argument(help="Where to write the config file.",
                                         dir_okay=False)],
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing file.")
                         ] = False,
) -> None:
    """Write a commented default config file."""
    if path.exists() and not overwrite:
        typer.echo(f"retrainer: {path} exists; use --overwrite to replace it", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT)
    from retrainer.artifacts import atomic_write_text

    text = resources.files("retrainer").joinpath("default_config.toml").read_text("utf-8")
    atomic_write_text(path, text)
    typer.echo(f"wrote {path}")


@data_app.command("sample")
def data_sample(
    folder: Annotated[Path, typer.Argument(help="Folder to write the demo data set into.",
                                           file_okay=False)],
    n_symbols: Annotated[int, typer.Option("--symbols", min=1, max=500,
                                           help="How many symbols.")] = 36,
    days: Annotated[int, typer.Option("--days", min=30, help="Days of hourly bars.")] = 760,
    seed: Annotated[int, typer.Option("--seed", help="Generator seed.")] = 7,
) -> None:
    """Write the deterministic demo universe (hourly OHLCV, Parquet)."""
    from retrainer.demo_data import write_demo_universe

    paths = write_demo_universe(folder, n_symbols=n_symbols, days=days, seed=seed)
    typer.echo(f"wrote {len(paths)} symbols to {folder}")


def main() -> None:
    try:
        app()
    except Exception as exc:  # a bug in retrainer: say so, keep the exit code distinct
        import traceback

        traceback.print_exc()
        typer.echo(f"retrainer: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(ExitCode.INTERNAL_ERROR)


