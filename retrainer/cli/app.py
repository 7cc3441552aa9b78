"""The `retrainer` command (Typer): run, verify, status, history, report, models, prune,
unquarantine, config init, data sample.

Flags named in the original design keep their underscore spelling and accept dashes too.
Bad input never produces a traceback: a one-paragraph message and a named exit code.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer

from retrainer.base.config import Mode, load_settings
from retrainer.base.errors import BadInputError
from retrainer.base.exitcodes import ExitCode
from retrainer.cli.batch import batch_app
from retrainer.cli.options import (
    RUN_DAY_HELP,
    ConfigOpt,
    RootOpt,
    _exit_codes,
    _run_day_option,
)


class Order(StrEnum):
    LONGEST_FIRST = "longest_first"
    PLAN = "plan"


class Promote(StrEnum):
    ALWAYS = "always"
    GATED = "gated"
    NEVER = "never"


app = typer.Typer(
    help="Nightly per-symbol model retraining: plan, train in isolated processes, verify, "
    "record. Exit codes: 0 ok, 1 some symbols failed, 2 bad input, 3 another run holds "
    "the lock, 4 deadline passed with symbols not started, 130 interrupted, 70 internal "
    "error.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(help="Config files.", no_args_is_help=True)
data_app = typer.Typer(help="Data sets.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(data_app, name="data")
schedule_app = typer.Typer(
    help="Schedule files: a systemd timer, or a crontab line.", no_args_is_help=True
)
app.add_typer(schedule_app, name="schedule")
app.add_typer(batch_app, name="batch")


@app.command()
def run(
    mode: Annotated[
        Mode | None,
        typer.Option(
            "--mode",
            help="sequential: one at a time; parallel: all at once, bounded by the "
            "machine; hybrid: a sliding window of --max_concurrent. (default: hybrid)",
            case_sensitive=False,
        ),
    ] = None,
    max_concurrent: Annotated[
        int | None,
        typer.Option(
            "--max_concurrent",
            "--max-concurrent",
            min=1,
            help="Items at once in hybrid mode. (default: 12 with a GPU, 2 on CPU)",
        ),
    ] = None,
    symbols: Annotated[
        str | None,
        typer.Option(
            "--symbols",
            help="topN (by median daily quote volume), all (every symbol with a data file), "
            "A,B,C, or a CSV file. (default: top20)",
        ),
    ] = None,
    timeout_minutes: Annotated[
        float | None,
        typer.Option(
            "--timeout_minutes",
            "--timeout-minutes",
            help="Per-attempt deadline; past it the item's process tree is killed. (default: 45)",
        ),
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option(
            "--retries",
            help="Retries of a failed or timed-out item, with jittered exponential "
            "backoff. (default: 2)",
        ),
    ] = None,
    max_memory_mb: Annotated[
        int | None,
        typer.Option(
            "--max_memory_mb",
            "--max-memory-mb",
            min=1,
            help="Per-item cap on the process tree's RSS; over it the item is killed and fails "
            "with 'memory limit'. (default: 80% of RAM / items at once)",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Retrain every symbol, even those already done today or fresh (unchanged "
            "since their champion was trained).",
        ),
    ] = False,
    promote: Annotated[
        Promote | None,
        typer.Option(
            "--promote",
            help="always: every verified success becomes its symbol's champion; gated: only "
            "one that passes the \\[promote] rules; never: champions stay. (default: gated)",
            case_sensitive=False,
        ),
    ] = None,
    driver: Annotated[
        str | None,
        typer.Option(
            "--driver",
            help="Where attempts run: local (child processes of this machine), ray or dask "
            "(a cluster; each attempt supervised on its node). (default: local)",
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray_address",
            "--ray-address",
            help="With --driver ray: the cluster to join (HOST:PORT, ray://…, auto). "
            "(default: \\[ray] address, else a local Ray instance)",
        ),
    ] = None,
    dask_address: Annotated[
        str | None,
        typer.Option(
            "--dask_address",
            "--dask-address",
            help="With --driver dask: the scheduler to use (tcp://HOST:8786). "
            "(default: \\[dask] address, else a LocalCluster)",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry_run",
            "--dry-run",
            help="Print the plan (run or skip, why, costs, concurrency) and write nothing.",
        ),
    ] = False,
    config: ConfigOpt = None,
    root: RootOpt = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Folder of OHLCV files, <SYMBOL>.parquet or <SYMBOL>.csv.",
            file_okay=False,
        ),
    ] = None,
    notify: Annotated[
        bool | None,
        typer.Option(
            "--notify/--no-notify",
            help="Send the configured \\[notify] messages (Telegram), or "
            "none. (default: \\[notify] enabled)",
        ),
    ] = None,
    order: Annotated[
        Order | None,
        typer.Option(
            "--order",
            help="longest_first: the items expected to take longest (from past ledgers) "
            "start first, new symbols before them all; plan: as the plan lists them. "
            "(default: longest_first)",
            case_sensitive=False,
        ),
    ] = None,
    deadline: Annotated[
        str | None,
        typer.Option(
            "--deadline",
            help="Local time (HH:MM) the night must be done by: the plan warns when its "
            "forecast misses it; past it no item starts, running ones get the stop grace, "
            "and the run exits 4. (default: \\[run] deadline, else none)",
        ),
    ] = None,
) -> None:
    """Run the nightly retraining job."""
    from retrainer.job.nightly import run_night
    from retrainer.views.display import make_console
    from retrainer.views.night_console import NightConsole

    flags: dict[str, dict[str, Any]] = {
        "run": {
            "mode": mode,
            "max_concurrent": max_concurrent,
            "symbols": symbols,
            "timeout_minutes": timeout_minutes,
            "retries": retries,
            "driver": driver,
            "root": root,
            "max_memory_mb": max_memory_mb,
            "order": order.value if order else None,
            "deadline": deadline,
        },
        "data": {"path": data},
        "notify": {"enabled": notify},
        "ray": {"address": ray_address},
        "dask": {"address": dask_address},
        "promote": {"mode": promote.value if promote else None},
    }
    with _exit_codes():
        settings = load_settings(config, flags)
        code = run_night(
            settings, force=force, dry_run=dry_run, reporter=NightConsole(make_console())
        )
    raise typer.Exit(code)


@app.command()
def verify(
    run_day: Annotated[
        str | None,
        typer.Option("--run", help=f"{RUN_DAY_HELP} (default: today)", callback=_run_day_option),
    ] = None,
    remote: Annotated[
        bool,
        typer.Option(
            "--remote",
            help="Check the configured storage's copies against sha256.txt "
            "instead of the local files.",
        ),
    ] = False,
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Re-hash every successful symbol's artifacts of a run against its sha256.txt."""
    from retrainer.mirror.verify import verify_remote, verify_run

    with _exit_codes():
        settings = load_settings(config, {"run": {"root": root}})
        if remote:
            report = verify_remote(
                settings.run.root.resolve(),
                run_day,
                _storage(settings),
                settings.storage.upload_features,
            )
        else:
            report = verify_run(settings.run.root.resolve(), run_day)
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.SOME_FAILED)


RunDayOpt = Annotated[
    str | None,
    typer.Option(
        "--run",
        help=f"{RUN_DAY_HELP} (default: the latest day under runs/)",
        callback=_run_day_option,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="One JSON object, for scripts.")]


@app.command()
def status(
    run_day: RunDayOpt = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh until the run finishes (or Ctrl-C).")
    ] = False,
    as_json: JsonOpt = False,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="For monitoring and scripts: one line, OK or FAILED, and exit 1 also when "
            "the latest run started longer ago than --max_age_hours.",
        ),
    ] = False,
    max_age_hours: Annotated[
        float,
        typer.Option(
            "--max_age_hours",
            "--max-age-hours",
            min=0,
            help="With --check and no --run: the oldest a latest run may be. (default: 26)",
        ),
    ] = 26.0,
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """A run's progress from its ledger: counts, running symbols, failures (any shell).
    Exit 0 while it runs or after it ended with 0, 1 after any other end, 2 without one."""
    from retrainer.views.display import make_console
    from retrainer.views.status import check_run, show_status

    with _exit_codes():
        settings = load_settings(config, {"run": {"root": root}})
        if check:
            if watch or as_json:
                raise BadInputError("--check prints one line: not with --watch or --json")
            code, line = check_run(settings.run.root.resolve(), run_day, max_age_hours)
            typer.echo(line)
            raise typer.Exit(code)
        code = show_status(
            settings.run.root.resolve(),
            run_day,
            watch=watch,
            as_json=as_json,
            console=make_console(),
        )
    raise typer.Exit(code)


@app.command()
def history(
    symbol: Annotated[str, typer.Argument(help="The symbol, e.g. BTCUSDT.")],
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Every past attempt of a symbol: day, status, minutes, key metrics, reason."""
    from retrainer.views.display import make_console
    from retrainer.views.history import print_history, symbol_history

    with _exit_codes():
        settings = load_settings(config, {"run": {"root": root}})
        rows = symbol_history(settings.run.root.resolve(), symbol.upper())
    print_history(symbol.upper(), rows, as_json, make_console())


@app.command()
def backtest(
    symbols: Annotated[
        str | None,
        typer.Option("--symbols", help="topN, all, A,B,C, or a CSV file. (default: top20)"),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="The backtest's folder, <root>/backtests/NAME; rerun it to resume. "
            "(default: \\[backtest] name, else walkforward)",
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Redo every window, even those done and verified.")
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry_run",
            "--dry-run",
            help="Print the windows (per symbol; every one with --verbose) and the estimated "
            "time, and write nothing.",
        ),
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="With --dry_run: one line per window.")
    ] = False,
    max_concurrent: Annotated[
        int | None,
        typer.Option("--max_concurrent", "--max-concurrent", min=1, help="Windows at once."),
    ] = None,
    driver: Annotated[
        str | None,
        typer.Option("--driver", help="local, ray or dask, as for run. (default: local)"),
    ] = None,
    retries: Annotated[
        int | None, typer.Option("--retries", help="Retries of a failed window. (default: 2)")
    ] = None,
    config: ConfigOpt = None,
    root: RootOpt = None,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Folder of OHLCV files.", file_okay=False),
    ] = None,
) -> None:
    """Walk-forward backtest: each (symbol, window) fitted in its own process, its
    out-of-sample forecasts kept; resumable (rerun it), then scored and reported."""
    from retrainer.base.artifacts import read_json_object
    from retrainer.job.backtest import backtest_work
    from retrainer.job.nightly import run_night
    from retrainer.plan.backtest import backtest_layout
    from retrainer.views.backtest import BacktestConsole, print_backtest_result
    from retrainer.views.display import make_console
    from retrainer.views.report.backtest import write_backtest_report

    flags: dict[str, dict[str, Any]] = {
        "run": {
            "symbols": symbols,
            "max_concurrent": max_concurrent,
            "driver": driver,
            "retries": retries,
            "root": root,
        },
        "data": {"path": data},
        "backtest": {"name": name},
    }
    console = make_console()
    with _exit_codes():
        settings = load_settings(config, flags)
        work = backtest_work(settings)
        code = run_night(
            settings,
            force=force,
            dry_run=dry_run,
            reporter=BacktestConsole(console, verbose),
            work=work,
        )
        if not dry_run:
            layout = backtest_layout(settings)
            summary = read_json_object(layout.backtest_summary_path())
            if summary is not None:
                print_backtest_result(summary, layout.backtest_summary_path(), console)
                typer.echo(f"wrote {write_backtest_report(layout)}")
    raise typer.Exit(code)


@app.command()
def report(
    run_day: RunDayOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Folder for report.html and its PNGs. (default: <root>/reports/<day>)",
            file_okay=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Write a self-contained HTML report of a run: timeline, minutes, net Sharpe, table."""
    from retrainer.views.report import write_report

    with _exit_codes():
        settings = load_settings(config, {"run": {"root": root}})
        path = write_report(settings.run.root.resolve(), run_day, out)
    typer.echo(f"wrote {path}")


@app.command()
def sync(
    run_day: Annotated[
        str | None,
        typer.Option(
            "--run",
            help=f"Only this day. {RUN_DAY_HELP} (default: every day with uploads still pending)",
            callback=_run_day_option,
        ),
    ] = None,
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Upload every artifact still pending to the configured storage, verified."""
    from retrainer.mirror.sync import run_sync

    with _exit_codes():
        settings = load_settings(config, {"run": {"root": root}})
        report = run_sync(settings, _storage(settings), run_day)
    for line in report.lines():
        typer.echo(line)
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.SOME_FAILED)


@app.command()
def unquarantine(
    symbol: Annotated[str, typer.Argument(help="The quarantined symbol, e.g. BTCUSDT.")],
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Release a symbol quarantined for failing \\[run] quarantine_after_nights nights in a
    row: the next night trains it. Takes the run lock (exit 3 while a night runs). Exit 0
    when released or not quarantined (said so), 2 when no recent ledger names the symbol."""
    from retrainer.base.artifacts import Layout
    from retrainer.base.clock import now_utc
    from retrainer.plan.quarantine import unquarantine as release

    with _exit_codes():
        settings = load_settings(config, {"run": {"root": root}})
        done = release(
            Layout(settings.run.root.resolve()),
            symbol.upper(),
            settings.run.quarantine_after_nights,
            now_utc(),
        )
    typer.echo(done.message)


def _storage(settings: Any) -> Any:
    from retrainer.mirror.storage.registry import make_storage

    storage = make_storage(settings.storage)
    if storage is None:
        raise BadInputError('no storage is configured ([storage] kind = "none")')
    return storage


@app.command()
def models(
    symbol: Annotated[
        str | None, typer.Argument(help="The symbol, e.g. BTCUSDT. (default: every symbol)")
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Each symbol's champion (re-verified), its challengers and their age. Exit 1 when a
    champion does not verify."""
    from retrainer.base.clock import now_utc
    from retrainer.views.display import make_console
    from retrainer.views.models import models_of, print_models

    with _exit_codes():
        settings = load_settings(config, {"run": {"root": root}})
        found = models_of(settings.run.root.resolve(), symbol and symbol.upper(), now_utc())
    raise typer.Exit(print_models(found, as_json, make_console()))


@app.command()
def prune(
    keep_days: Annotated[
        int,
        typer.Option(
            "--keep-days", "--keep_days", min=1, help="Keep the attempts of the last N days."
        ),
    ],
    remote: Annotated[
        bool,
        typer.Option("--remote", help="Also delete those folders from the configured storage."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", "--dry_run", help="Say what would go; remove nothing.")
    ] = False,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
    root: RootOpt = None,
) -> None:
    """Remove attempt folders older than --keep-days; never a champion, never one a kept
    day's ledger names. Takes the run lock (exit 3 while a night runs); exit 1 when a
    folder could not be removed."""
    import json

    from retrainer.base.artifacts import Layout
    from retrainer.base.clock import now_utc
    from retrainer.job.retention import prune as prune_models

    with _exit_codes():
        settings = load_settings(config, {"run": {"root": root}})
        report = prune_models(
            Layout(settings.run.root.resolve()),
            keep_days,
            now=now_utc(),
            storage=_storage(settings) if remote else None,
            remote=remote,
            dry_run=dry_run,
        )
    if as_json:
        typer.echo(json.dumps(report.to_dict()))
    else:
        for line in report.lines():
            typer.echo(line)
    raise typer.Exit(ExitCode.OK if report.ok else ExitCode.SOME_FAILED)


@config_app.command("init")
def config_init(
    path: Annotated[Path, typer.Argument(help="Where to write the config file.", dir_okay=False)],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing file.")
    ] = False,
) -> None:
    """Write a commented default config file."""
    if path.exists() and not overwrite:
        typer.echo(f"retrainer: {path} exists; use --overwrite to replace it", err=True)
        raise typer.Exit(ExitCode.BAD_INPUT)
    from retrainer.base.artifacts import atomic_write_text

    text = resources.files("retrainer").joinpath("default_config.toml").read_text("utf-8")
    atomic_write_text(path, text)
    typer.echo(f"wrote {path}")


@data_app.command("sample")
def data_sample(
    folder: Annotated[
        Path, typer.Argument(help="Folder to write the demo data set into.", file_okay=False)
    ],
    n_symbols: Annotated[
        int, typer.Option("--symbols", min=1, max=500, help="How many symbols.")
    ] = 36,
    days: Annotated[int, typer.Option("--days", min=30, help="Days of hourly bars.")] = 760,
    seed: Annotated[int, typer.Option("--seed", help="Generator seed.")] = 7,
) -> None:
    """Write the deterministic demo universe (hourly OHLCV, Parquet)."""
    from retrainer.base.demo_data import write_demo_universe

    paths = write_demo_universe(folder, n_symbols=n_symbols, days=days, seed=seed)
    typer.echo(f"wrote {len(paths)} symbols to {folder}")


AtOpt = Annotated[str, typer.Option("--at", help="Start time, HH:MM, the machine's local time.")]


@schedule_app.command("systemd")
def schedule_systemd(
    at: AtOpt,
    user: Annotated[
        bool, typer.Option("--user", help="A user unit, written to ~/.config/systemd/user.")
    ] = False,
    config: ConfigOpt = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            help="Folder to write the units into. (default: ~/.config/systemd/user "
            "with --user, else /etc/systemd/system)",
            file_okay=False,
        ),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="Unit name.")] = "retrainer",
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the units instead of writing them.")
    ] = False,
) -> None:
    """Write a systemd .service + .timer pair that runs `retrainer run` every night."""
    from retrainer.cli.schedule import write_systemd

    with _exit_codes():
        write_systemd(at, user=user, config=config, output=output, name=name, print_only=print_only)


@schedule_app.command("cron")
def schedule_cron(at: AtOpt, config: ConfigOpt = None) -> None:
    """Print a crontab line that runs `retrainer run` every night."""
    from retrainer.cli.schedule import print_cron

    with _exit_codes():
        print_cron(at, config=config)


def main() -> None:
    from retrainer.cli.streams import tolerate_closed_pipes

    tolerate_closed_pipes()  # `retrainer run --dry_run | head -1`: not an error of ours
    try:
        app()
    except Exception as exc:  # a bug in retrainer: say so, keep the exit code distinct
        import traceback

        traceback.print_exc()
        typer.echo(f"retrainer: internal error: {type(exc).__name__}: {exc}", err=True)
        sys.exit(ExitCode.INTERNAL_ERROR)
