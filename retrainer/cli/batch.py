"""`retrainer batch`: a night as one AWS Batch array job (docs/aws-batch.md).

submit      plan the night as `run` does and submit it (or find it submitted)
definition  print, or register, the job definition [batch] describes
child       the container's command: one item's attempt (AWS_BATCH_JOB_ARRAY_INDEX)
status      the job and the items; once it has ended, the night's ledger and summary
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from typing import Annotated, Any

import typer

from retrainer.base.clock import now_utc, run_day
from retrainer.base.config import load_settings
from retrainer.base.exitcodes import ExitCode
from retrainer.cli.options import RUN_DAY_HELP, ConfigOpt, RootOpt, _exit_codes, _run_day_option

batch_app = typer.Typer(
    help="A night on AWS Batch: one array job, one child per item.", no_args_is_help=True
)


@contextlib.contextmanager
def _batch_errors() -> Iterator[None]:
    """Batch or the bucket out of reach (not the user's input): one line, exit 74."""
    from retrainer.job.batch.client import BatchApiError
    from retrainer.mirror.storage.protocol import UploadError

    with _exit_codes():
        try:
            yield
        except (BatchApiError, UploadError) as exc:
            typer.echo(f"retrainer: {exc}", err=True)
            raise typer.Exit(ExitCode.IO_ERROR) from None


def _echo_json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


@batch_app.command("submit")
def submit(
    config: ConfigOpt = None,
    root: RootOpt = None,
    symbols: Annotated[
        str | None, typer.Option("--symbols", help="As `run --symbols`. (default: top20)")
    ] = None,
    retries: Annotated[
        int | None,
        typer.Option("--retries", min=0, max=9, help="Batch retries of a child. (default: 2)"),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Retrain every symbol (as `run --force`), and submit a new job even when "
            "the night's job is there.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry_run", "--dry-run", help="Print the plan and the request; submit nothing."
        ),
    ] = False,
) -> None:
    """Plan the night as `run` does and submit it as one array job (idempotent)."""
    from retrainer.job.batch.submit import submit_night
    from retrainer.views.display import make_console
    from retrainer.views.night_console import NightConsole

    flags = {"run": {"root": root, "symbols": symbols, "retries": retries}}
    with _batch_errors():
        settings = load_settings(config, flags)
        submission = submit_night(settings, force=force, dry_run=dry_run)
    if dry_run:
        NightConsole(make_console()).plan(submission.night, True)
        if submission.plan is not None:
            _echo_json(submission.request)
        raise typer.Exit(ExitCode.OK)
    if submission.plan is None:
        typer.echo("nothing to run tonight: every item is skipped (see --dry_run)")
        raise typer.Exit(ExitCode.OK)
    done = "attached to" if submission.attached else "submitted"
    plan = submission.plan
    typer.echo(f"{done} {plan.job_name} ({submission.job_id}): {len(plan.items)} item(s)")
    typer.echo(f"plan: {plan.uri()}")


@batch_app.command("definition")
def definition(
    config: ConfigOpt = None,
    register: Annotated[
        bool, typer.Option("--register", help="Register it with Batch (else print it).")
    ] = False,
) -> None:
    """Print (or register) the job definition \\[batch] describes."""
    from retrainer.job.batch.client import BatchClient
    from retrainer.job.batch.request import definition_request

    with _batch_errors():
        settings = load_settings(config)
        request = definition_request(settings.batch)
        if not register:
            _echo_json(request)
            raise typer.Exit(ExitCode.OK)
        answer = BatchClient(settings.batch).register_definition(request)
    typer.echo(f"registered {answer.get('jobDefinitionArn')}")


@batch_app.command("child")
def child(
    plan: Annotated[str, typer.Option("--plan", help="s3://BUCKET/…/plan.json")],
    endpoint_url: Annotated[
        str | None, typer.Option("--endpoint_url", "--endpoint-url", help="Another S3 API.")
    ] = None,
    region: Annotated[str | None, typer.Option("--region", help="The bucket's region.")] = None,
    addressing_style: Annotated[
        str, typer.Option("--addressing_style", "--addressing-style", help="auto, path, virtual")
    ] = "auto",
) -> None:
    """The container's command: one item's attempt (AWS_BATCH_JOB_ARRAY_INDEX)."""
    from retrainer.base.logs import configure_logging
    from retrainer.job.batch.child import run_child

    configure_logging(None, "info")
    code = run_child(
        plan, region=region, endpoint_url=endpoint_url, addressing_style=addressing_style
    )
    sys.stdout.flush()
    raise typer.Exit(code)


@batch_app.command("status")
def status(
    config: ConfigOpt = None,
    root: RootOpt = None,
    run: Annotated[
        str | None, typer.Option("--run", help=RUN_DAY_HELP, callback=_run_day_option)
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", help="Poll until the job ends, then assemble the night.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object a look.")] = False,
) -> None:
    """The day's Batch job and its items; once it has ended, the night's ledger, summary
    and notifications under the root, as a local night leaves them."""
    from retrainer.job.batch.watch import Seen, watch_night
    from retrainer.views.display import make_console
    from retrainer.views.night_console import NightConsole

    def show(seen: Seen) -> None:
        if as_json:
            typer.echo(json.dumps(seen.to_dict(), sort_keys=True))
            return
        c = seen.counts
        typer.echo(
            f"{seen.plan.job_name} {seen.job.status}: {c.total} items, "
            f"{len(c.succeeded)} succeeded, {len(c.failed)} failed, {len(c.waiting)} waiting"
        )
        for item_id, reason in c.failed.items():
            typer.echo(f"  {item_id}: {reason}")

    with _batch_errors():
        settings = load_settings(config, {"run": {"root": root}})
        code = watch_night(
            settings,
            run or run_day(now_utc()),
            watch=watch,
            reporter=NightConsole(make_console()),
            show=show,
        )
    raise typer.Exit(code)
