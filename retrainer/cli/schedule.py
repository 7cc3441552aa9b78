"""`retrainer schedule systemd|cron`: settings in, files or a line out, next steps said."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from retrainer.base.artifacts import atomic_write_text
from retrainer.base.config import CONFIG_ENV, load_settings
from retrainer.base.errors import BadInputError
from retrainer.base.resources import detect_resources
from retrainer.job.portability import schedule_warnings
from retrainer.job.timers import (
    SYSTEM_UNIT_DIR,
    Schedule,
    build_schedule,
    cron_line,
    systemd_units,
    user_unit_dir,
)


def _schedule(at: str, config: Path | None, name: str = "retrainer") -> Schedule:
    if config is None and os.environ.get(CONFIG_ENV):
        config = Path(os.environ[CONFIG_ENV])
    if config is not None and not config.is_file():
        raise BadInputError(f"config file {config} does not exist")
    settings = load_settings(config, {})
    schedule = build_schedule(settings, config, at, detect_resources(), name)
    for warning in schedule_warnings(settings, config):  # stderr: stdout stays the files
        typer.echo(f"retrainer: warning: {warning}", err=True)
    return schedule


def write_systemd(
    at: str, *, user: bool, config: Path | None, output: Path | None, name: str, print_only: bool
) -> None:
    schedule = _schedule(at, config, name)
    units = systemd_units(schedule, user)
    if schedule.worst_night_s > schedule.start_timeout_s:
        typer.echo(
            f"retrainer: warning: a night on which every attempt times out would take "
            f"{schedule.worst_night_s / 3600:.1f} h; systemd stops it after "
            f"{schedule.start_timeout_s / 3600:.0f} h (exit 130, its summary written) so that "
            "the next night starts on time. To fit: lower run.timeout_minutes or "
            "run.retries, or raise run.max_concurrent.",
            err=True,
        )
    if print_only:
        for filename, text in units.items():
            typer.echo(f"# {filename}\n{text}")
        return
    folder = output or (user_unit_dir() if user else SYSTEM_UNIT_DIR)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        schedule.working_dir.mkdir(parents=True, exist_ok=True)  # systemd must chdir there
        for filename, text in units.items():
            atomic_write_text(folder / filename, text)
    except OSError as exc:
        raise BadInputError(
            f"cannot write the units into {folder} ({exc.strerror}); "
            "use --user, or --output DIR, or run as root"
        ) from None
    for filename in units:
        typer.echo(f"wrote {folder / filename}")
    systemctl = "systemctl --user" if user else "systemctl"
    typer.echo(
        f"start timeout {schedule.start_timeout_s} s: {schedule.start_timeout_how}\n"
        f"stop timeout {schedule.stop_timeout_s} s; to enable:\n"
        f"  {systemctl} daemon-reload && {systemctl} enable --now {name}.timer"
    )
    if user:
        typer.echo('  loginctl enable-linger "$USER"   # so that it runs while you are logged out')


def print_cron(at: str, *, config: Path | None) -> None:
    schedule = _schedule(at, config)
    typer.echo(cron_line(schedule))
