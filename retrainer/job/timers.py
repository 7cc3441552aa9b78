"""Schedule files for the nightly run: a systemd .service + .timer pair, or a crontab line.

Both name everything by absolute path (the venv's `retrainer`, the config file, the root),
because neither systemd nor cron starts in the folder or with the PATH of whoever set the
schedule up. The service's start timeout is derived from the config so that it outlasts
even a night on which every attempt runs into its deadline, but never reaches the next
night (capped at 23 h: the timer fires every 24 h and a oneshot still starting blocks it);
the unit says how it was derived. Its stop timeout lets the graceful stop (SIGTERM to the
items, their kill grace, the summary, the notifier's bounded close) finish before systemd
kills what is left.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

from retrainer.base.config import Settings
from retrainer.base.data import data_files
from retrainer.base.errors import BadInputError
from retrainer.base.resources import Resources
from retrainer.base.symbols import ALL, TOP_N, parse_symbol_list, read_symbols_csv
from retrainer.plan.policy import max_concurrent_for
from retrainer.plan.windows import window_size

AT = re.compile(r"(\d{1,2}):(\d{2})")
# Planning (reading and checking every symbol's data), the summary and the uploads at the
# end: generous, since a start timeout that fires kills a healthy run.
RUN_OVERHEAD_S = 900
# After the items are stopped: the summary, the ledger, uploads of the last files.
STOP_MARGIN_S = 60
# The timer fires every 24 h: a night still starting then blocks the next one (systemd
# does not start an active oneshot again), so its start timeout stays under a day.
START_TIMEOUT_CAP_S = 23 * 3600
CRON_LOCK_NAME = ".retrainer.lock.cron"
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
    # `retrainer status --check` of the same root: the one line a failed night mails.
    check_command: tuple[str, ...] = ()
    start_timeout_how: str = ""  # how start_timeout_s was derived, for the unit's comment
    worst_night_s: int = 0  # every attempt timing out: over start_timeout_s when capped


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
    where = ["--config", str(config.resolve())] if config is not None else ["--root", str(root)]
    command = [*retrainer_command(), "run", *where]
    if config is None:  # built-in defaults: pin the folders they resolve against today
        command += ["--data", str(settings.data.path.resolve())]
    start = start_timeout(settings, resources)
    return Schedule(
        hour,
        minute,
        tuple(command),
        root,
        root / "logs",
        start.seconds,
        stop_timeout_s(settings),
        name,
        start_timeout_how=start.how,
        worst_night_s=start.worst_night_s,
        check_command=(*retrainer_command(), "status", "--check", *where),
    )


def retrainer_command() -> list[str]:
    """The `retrainer` script beside this interpreter (the venv's), else `python -m`."""
    interpreter = Path(sys.executable).absolute()  # not resolved: a venv's python is a link
    script = interpreter.parent / "retrainer"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [str(interpreter), "-m", "retrainer"]


def symbol_count(settings: Settings) -> int:
    """How many symbols the config names, without reading any data (topN counts N, all
    the data files in the folder today)."""
    spec = settings.run.symbols.strip()
    top = TOP_N.fullmatch(spec)
    if top:
        return int(top.group(1))
    if spec.lower() == ALL:
        return len(data_files(settings.data.path.resolve()))
    if spec.lower().endswith(".csv") or Path(spec).expanduser().is_file():
        return len(read_symbols_csv(Path(spec).expanduser()))
    return len(parse_symbol_list(spec))


@dataclass(frozen=True)
class StartTimeout:
    seconds: int  # TimeoutStartSec
    worst_night_s: int  # the whole night if every attempt of every symbol times out
    how: str  # the derivation, in words and numbers

    @property
    def capped(self) -> bool:
        return self.seconds < self.worst_night_s


def start_timeout(settings: Settings, resources: Resources) -> StartTimeout:
    """Longer than the whole run even if every attempt of every symbol times out, and at
    most START_TIMEOUT_CAP_S.

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
    worst = math.ceil(
        rounds * attempt_s
        + run.retries * run.backoff_cap_s
        + RUN_OVERHEAD_S
        + settings.notify.close_timeout_s
    )
    seconds = min(worst, START_TIMEOUT_CAP_S)
    how = (
        f"{symbols} symbols x {run.retries + 1} attempt{'s' if run.retries else ''} "
        f"(retries {run.retries}), "
        f"{window} at a time: {rounds} rounds (one more for the last retries) of "
        f"{_n(attempt_s)} s ({_n(run.timeout_minutes)} min timeout + "
        f"{_n(run.kill_grace_s)} s kill grace), + {run.retries} backoffs of at most "
        f"{_n(run.backoff_cap_s)} s, + {RUN_OVERHEAD_S} s to plan and close, + "
        f"{_n(settings.notify.close_timeout_s)} s for the notifier = {worst} s "
        f"({worst / 3600:.1f} h)"
    )
    if seconds < worst:
        how += (
            f", capped at {seconds} s ({seconds / 3600:.0f} h) so that the next night's "
            "timer is not blocked"
        )
    return StartTimeout(seconds, worst, how)


def start_timeout_s(settings: Settings, resources: Resources) -> int:
    return start_timeout(settings, resources).seconds


def _n(value: float) -> str:
    """1800 for 1800.0, 0.5 for 0.5: numbers as a person writes them."""
    return f"{value:g}"


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
            "# Longer than the whole run, every attempt timing out included, and under the",
            "# 24 h to the next night. Derived from the config:",
            *_comment(schedule.start_timeout_how),
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


def _comment(text: str) -> list[str]:
    """Comment lines of text, a number never parted from its unit (300 s, 45 min)."""
    nbsp = "\u00a0"  # textwrap never breaks a line there
    kept = re.sub(r"(\d) (s|h|min)\b", rf"\1{nbsp}\2", text)
    return [f"#   {line.replace(nbsp, ' ')}" for line in textwrap.wrap(kept, 84)]


def cron_command(schedule: Schedule) -> str:
    """The shell command of the crontab line: absolute paths, a lock so that runs never
    overlap, output appended to the log folder. `flock -n` makes a night that starts while
    the last one still runs give up at once instead of queueing.

    A night that does not end with 0 (the lock busy included) says so in one line, on
    stderr and in the log: cron mails a job's output (MAILTO), and everything else went to
    the log. The line carries `retrainer status --check`'s verdict (the run, its exit code,
    why), and the command exits with the run's code."""
    flock = shutil.which("flock") or "/usr/bin/flock"
    # Relative to the working folder where they lie under it: cron refuses a command line
    # of 1,000 characters or more, and the run's and the check's paths already repeat.
    log = _sh(_under(schedule.log_dir / CRON_LOG_NAME, schedule.working_dir))
    lock = _sh(_under(schedule.working_dir / CRON_LOCK_NAME, schedule.working_dir))
    run = " ".join(_sh(a) for a in schedule.command)
    check = " ".join(_sh(a) for a in schedule.check_command)
    return (
        f"mkdir -p {_sh(schedule.log_dir)} && cd {_sh(schedule.working_dir)} && l={log} && "
        f'{{ {_sh(flock)} -n -E {LOCK_BUSY_EXIT} {lock} {run} >> "$l" 2>&1; rc=$?; '
        f"[ $rc -eq 0 ] || {{ if [ $rc -eq {LOCK_BUSY_EXIT} ]; then "
        'w="not started, the previous run still holds the cron lock"; '
        f'else w="exit $rc; $({check} 2>&1)"; fi; '
        'm="$(date -u +%FT%TZ) retrainer: the nightly run failed: $w (log: $PWD/$l)"; '
        'echo "$m" >> "$l"; echo "$m" >&2; exit $rc; }; }'
    )


def _under(path: Path, folder: Path) -> Path:
    """path relative to folder when it lies below it, else as it is."""
    try:
        return path.relative_to(folder)
    except ValueError:
        return path


# Debian's cron (and Vixie cron's) MAX_COMMAND: a longer command line is refused.
CRON_MAX_COMMAND = 1000


def cron_line(schedule: Schedule) -> str:
    # cron turns an unescaped % into a newline.
    command = cron_command(schedule).replace("%", "\\%")
    if len(command) >= CRON_MAX_COMMAND:
        raise BadInputError(
            f"the cron command would be {len(command)} characters, and cron refuses "
            f"{CRON_MAX_COMMAND} or more: use `retrainer schedule systemd`, or shorter paths "
            "for the root, the config and the venv"
        )
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
