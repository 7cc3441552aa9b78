"""Schedule files for the nightly run: a systemd .service + .timer pair, or a crontab line.

Both name everything by absolute path (the venv's `retrainer`, the config file, the root),
because neither systemd nor cron starts in the folder or with the PATH of whoever set the
schedule up. The service's start timeout is derived from the config so that it outlasts
even a night on which every attempt runs into its deadline; its stop timeout lets the
graceful stop (SIGTERM to the items, their kill grace, the summary, the notifier's bounded
close) finish before systemd kills what is left.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from retrainer.base.config import Settings
from retrainer.base.errors import BadInputError
from retrainer.base.resources import Resources
from retrainer.base.symbols import TOP_N, parse_symbol_list, read_symbols_csv
from retrainer.plan.policy import max_concurrent_for
from retrainer.plan.windows import window_size

AT = re.compile(r"(\d{1,2}):(\d{2})")
# Planning (reading and checking every symbol's data), the summary and the uploads at the
# end: generous, since a start timeout that fires kills a healthy run.
RUN_OVERHEAD_S = 900
# After the items are stopped: the summary, the ledger, uploads of the last files.
STOP_MARGIN_S = 60
CRON_LOCK_NAME = ".retrainer.base.lock.cron"
CRON_LOG_NAME = "cron.log"
LOCK_BUSY_EXIT = 75  # flock's exit when the lock is held (EX_TEMPFAIL; retrainer never uses it)


@dataclass(frozen=True)
class Schedule:
    hour: int
    minute: int
    command: tuple[str, ...]  # absolute: the executable, its arguments
    working_dir: Path
    log_dir: Path
    start_timeout_s: int
    stop_timeout_s: int
    name: str = "retrainer"


def parse_at(text: str) -> tuple[int, int]:
    match = AT.fullmatch(text.strip())
    if not match or int(match[1]) > 23 or int(match[2]) > 59:
        raise BadInputError(f"--at {text!r}: expected HH:MM, 00:00 to 23:59")
    return int(match[1]), int(match[2])


def build_schedule(
    settings: Settings, config: Path | None, at: str, resources: Resources, name: str = "retrainer"
) -> Schedule:
    hour, minute = parse_at(at)
    if not re.fullmatch(r"[A-Za-z0-9_.@-]+", name):
        raise BadInputError(f"--name {name!r}: letters, digits and _ . @ - only")
    root = settings.run.root.resolve()
    command = [*retrainer_command(), "run"]
    if config is not None:
        command += ["--config", str(config.resolve())]
    else:  # built-in defaults: pin the folders they resolve against today
        command += ["--root", str(root), "--data", str(settings.data.path.resolve())]
    return Schedule(
        hour,
        minute,
        tuple(command),
        root,
        root / "logs",
        start_timeout_s(settings, resources),
        stop_timeout_s(settings),
        name,
    )


def retrainer_command() -> list[str]:
    """The `retrainer` script beside this interpreter (the venv's), else `python -m`."""
    interpreter = Path(sys.executable).absolute()  # not resolved: a venv's python is a link
    script = interpreter.parent / "retrainer"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(interpreter), "-m", "retrainer"]


def symbol_count(settings: Settings) -> int:
    """How many symbols the config names, without reading any data (topN counts N)."""
    spec = settings.run.symbols.strip()
    top = TOP_N.fullmatch(spec)
    if top:
        return int(top.group(1))
    if spec.lower().endswith(".csv") or Path(spec).expanduser().is_file():
        return len(read_symbols_csv(Path(spec).expanduser()))
    return len(parse_symbol_list(spec))


def start_timeout_s(settings: Settings, resources: Resources) -> int:
    """Longer than the whole run even if every attempt of every symbol times out.

    A window of w slots runs n × (retries + 1) attempts of at most timeout + kill grace
    each in at most ⌈n(r+1)/w⌉ + 1 rounds; each retry may wait up to backoff_cap_s first.
    """
    run = settings.run
    symbols = max(1, symbol_count(settings))
    window = window_size(
        run.mode, symbols, max_concurrent_for(run, resources.has_gpu), resources.machine_slots
    )
    attempts = symbols * (run.retries + 1)
    attempt_s = run.timeout_minutes * 60 + run.kill_grace_s
    rounds = math.ceil(attempts / window) + 1
    total = (
        rounds * attempt_s
        + run.retries * run.backoff_cap_s
        + RUN_OVERHEAD_S
        + settings.notify.close_timeout_s
    )
    return math.ceil(total)


def stop_timeout_s(settings: Settings) -> int:
    """The graceful stop: running items get stop_grace_s to finish, then SIGTERM and
    kill_grace_s, then the run writes its summary and notifies."""
    return math.ceil(
        settings.run.stop_grace_s
        + settings.run.kill_grace_s
        + settings.notify.close_timeout_s
        + STOP_MARGIN_S
    )


def systemd_units(schedule: Schedule, user: bool) -> dict[str, str]:
    """File name → content of the .service and the .timer."""
    service, timer = f"{schedule.name}.service", f"{schedule.name}.timer"
    network = [] if user else ["After=network-online.target", "Wants=network-online.target"]
    service_text = "\n".join(
        [
            "# Written by `retrainer schedule systemd`; regenerate it rather than edit it.",
            "[Unit]",
            "Description=retrainer: nightly per-symbol model retraining",
            *network,
            "",
            "[Service]",
            "Type=oneshot",
            f"WorkingDirectory={_systemd_path(schedule.working_dir)}",
            f"ExecStart={_systemd_command(schedule.command)}",
            "# Longer than the whole run, every attempt timing out included (derived from the",
            "# config: symbols, retries, timeout_minutes, kill_grace_s, concurrency).",
            f"TimeoutStartSec={schedule.start_timeout_s}",
            "# SIGTERM to retrainer alone: it stops its items gracefully (exit 130); whatever",
            "# is left when the stop timeout ends gets SIGKILL.",
            "KillMode=mixed",
            f"TimeoutStopSec={schedule.stop_timeout_s}",
            f"SyslogIdentifier={schedule.name}",
            "",
        ]
    )
    timer_text = "\n".join(
        [
            "# Written by `retrainer schedule systemd`; regenerate it rather than edit it.",
            "[Unit]",
            f"Description=retrainer: nightly run at {schedule.hour:02d}:{schedule.minute:02d}",
            "",
            "[Timer]",
            f"OnCalendar=*-*-* {schedule.hour:02d}:{schedule.minute:02d}:00",
            "# A night missed while the machine was off runs as soon as it is back.",
            "Persistent=true",
            f"Unit={service}",
            "",
            "[Install]",
            "WantedBy=timers.target",
            "",
        ]
    )
    return {service: service_text, timer: timer_text}


def cron_command(schedule: Schedule) -> str:
    """The shell command of the crontab line: absolute paths, a lock so that runs never
    overlap, output appended to the log folder. `flock -n` makes a night that starts while
    the last one still runs give up at once (and say so in the log) instead of queueing."""
    flock = shutil.which("flock") or "/usr/bin/flock"
    log = _sh(schedule.log_dir / CRON_LOG_NAME)
    lock = _sh(schedule.working_dir / CRON_LOCK_NAME)
    run = " ".join(_sh(a) for a in schedule.command)
    return (
        f"mkdir -p {_sh(schedule.log_dir)} && cd {_sh(schedule.working_dir)} && "
        f"{{ {_sh(flock)} -n -E {LOCK_BUSY_EXIT} {lock} {run} >> {log} 2>&1 || "
        f'[ $? -ne {LOCK_BUSY_EXIT} ] || echo "$(date -u +%FT%TZ) retrainer: not started,'
        f' the previous run still holds the cron lock" >> {log}; }}'
    )


def cron_line(schedule: Schedule) -> str:
    # cron turns an unescaped % into a newline.
    command = cron_command(schedule).replace("%", "\\%")
    return f"{schedule.minute} {schedule.hour} * * * {command}"


def user_unit_dir(environ: dict[str, str] | None = None) -> Path:
    environ = dict(os.environ) if environ is None else environ
    base = environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


SYSTEM_UNIT_DIR = Path("/etc/systemd/system")


def _sh(value: str | Path) -> str:
    return shlex.quote(str(value))


def _systemd_path(path: Path) -> str:
    return str(path).replace("%", "%%")  # the whole value is the path: no splitting


def _systemd_command(argv: tuple[str, ...]) -> str:
    # systemd splits ExecStart like a shell and expands % specifiers: quote and escape.
    return " ".join(_quote_systemd(arg) for arg in argv)


def _quote_systemd(arg: str) -> str:
    arg = arg.replace("%", "%%").replace("$", "$$")  # specifiers and variables, literally
    if arg and not any(c.isspace() or c in "\"'\\;" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
