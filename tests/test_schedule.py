"""`retrainer schedule systemd|cron`: checked by systemd-analyze and crontab, and run."""

from __future__ import annotations

import configparser
import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retrainer.base.clock import now_utc, run_day
from retrainer.base.errors import BadInputError
from retrainer.job.timers import parse_at
from tests.conftest import REPO, RunCli, read_json, write_config

VENV_RETRAINER = Path(sys.executable).absolute().parent / "retrainer"


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is not installed (`make test` installs it)"
    return path


def nightly_config(tmp_path: Path, small_data: Path, **run: object) -> Path:
    symbol = sorted(p.stem for p in small_data.glob("*.parquet"))[0]
    return write_config(
        tmp_path / "conf" / "nightly.toml",
        {
            "run": {
                "root": "../root",
                "symbols": symbol,
                "retries": 1,
                "timeout_minutes": 10,
                "kill_grace_s": 5,
                "stop_grace_s": 30,
                "max_concurrent": 2,
                **run,
            },
            "data": {"path": str(small_data)},
            "trainer": {
                "plugin": "tests.support.plugins:faulty",
                "params": {"pid_dir": str(tmp_path / "pids")},
            },
            "notify": {"close_timeout_s": 20},
        },
    )


def read_unit(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def systemd_verify(*units: Path, user: bool, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "xdg-runtime"  # the user manager's verify needs a runtime folder
    runtime.mkdir(mode=0o700, exist_ok=True)
    args = [tool("systemd-analyze"), *(["--user"] if user else []), "verify", *map(str, units)]
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=60)


@pytest.fixture
def config(tmp_path: Path, small_data: Path) -> Path:
    (tmp_path / "conf").mkdir()
    return nightly_config(tmp_path, small_data)


@pytest.mark.parametrize("user", [True, False])
def test_the_systemd_units_pass_systemd_analyze_verify(
    tmp_path: Path, config: Path, run_cli: RunCli, user: bool
) -> None:
    out = tmp_path / "units"
    flags = ["--user"] if user else []

    result = run_cli(
        "schedule",
        "systemd",
        "--at",
        "02:30",
        "--config",
        str(config),
        "--output",
        str(out),
        *flags,
    )

    assert result.returncode == 0, result.stderr
    service, timer = out / "retrainer.service", out / "retrainer.timer"
    verified = systemd_verify(service, timer, user=user, tmp_path=tmp_path)
    assert verified.returncode == 0, verified.stderr
    assert "retrainer." not in verified.stdout + verified.stderr  # no warning about ours
    assert ("network-online.target" in service.read_text()) is not user


def test_the_service_is_a_oneshot_of_the_venvs_retrainer_in_the_run_root(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    out = tmp_path / "units"
    assert (
        run_cli(
            "schedule", "systemd", "--at", "02:30", "--config", str(config), "--output", str(out)
        ).returncode
        == 0
    )

    service = read_unit(out / "retrainer.service")["Service"]
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == f"{VENV_RETRAINER} run --config {config.resolve()}"
    assert service["WorkingDirectory"] == str((tmp_path / "root").resolve())
    assert (tmp_path / "root").is_dir()
    assert service["KillMode"] == "mixed"
    # The graceful stop: the items' stop grace (30 s) and kill grace (5 s), and the
    # notifier's close (20 s).
    assert int(service["TimeoutStopSec"]) > 30 + 5 + 20
    timer = read_unit(out / "retrainer.timer")
    assert timer["Timer"]["OnCalendar"] == "*-*-* 02:30:00"
    assert timer["Timer"]["Persistent"] == "true"
    assert timer["Timer"]["Unit"] == "retrainer.service"
    assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_start_timeout_outlasts_a_night_on_which_every_attempt_times_out(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    (tmp_path / "conf").mkdir()
    config = nightly_config(
        tmp_path,
        small_data,
        symbols="A,B,C,D,E",
        retries=2,
        timeout_minutes=30,
        kill_grace_s=10,
        max_concurrent=2,
        backoff_cap_s=120,
    )
    out = tmp_path / "units"

    assert (
        run_cli(
            "schedule", "systemd", "--at", "23:05", "--config", str(config), "--output", str(out)
        ).returncode
        == 0
    )

    start_s = int(read_unit(out / "retrainer.service")["Service"]["TimeoutStartSec"])
    # 5 symbols × 3 attempts of 30 min + 10 s, two at a time, and two backoffs of 120 s.
    worst_night_s = (5 * 3 / 2) * (30 * 60 + 10) + 2 * 120
    assert worst_night_s < start_s < 2 * worst_night_s
    assert read_unit(out / "retrainer.timer")["Timer"]["OnCalendar"] == "*-*-* 23:05:00"


def test_user_units_go_to_the_users_systemd_folder(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    home = tmp_path / "home"
    home.mkdir()

    result = run_cli(
        "schedule",
        "systemd",
        "--at",
        "04:00",
        "--user",
        "--config",
        str(config),
        "--name",
        "nightly-btc",
        env={"HOME": str(home), "XDG_CONFIG_HOME": ""},
    )

    assert result.returncode == 0, result.stderr
    folder = home / ".config" / "systemd" / "user"
    assert sorted(p.name for p in folder.iterdir()) == ["nightly-btc.service", "nightly-btc.timer"]
    assert "systemctl --user enable --now nightly-btc.timer" in result.stdout
    assert read_unit(folder / "nightly-btc.timer")["Timer"]["Unit"] == "nightly-btc.service"


def test_print_shows_the_units_and_writes_nothing(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    result = run_cli(
        "schedule",
        "systemd",
        "--at",
        "02:30",
        "--config",
        str(config),
        "--print",
        env={"HOME": str(tmp_path / "nohome")},
    )

    assert result.returncode == 0, result.stderr
    assert "# retrainer.service\n" in result.stdout and "Type=oneshot" in result.stdout
    assert "# retrainer.timer\n" in result.stdout and "Persistent=true" in result.stdout
    assert not (tmp_path / "nohome").exists()


def test_a_percent_sign_in_a_path_is_escaped_for_systemd(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    (tmp_path / "conf").mkdir()
    config = nightly_config(tmp_path, small_data)
    odd = config.rename(tmp_path / "conf" / "100% nightly.toml")
    out = tmp_path / "units"

    assert (
        run_cli(
            "schedule", "systemd", "--at", "02:30", "--config", str(odd), "--output", str(out)
        ).returncode
        == 0
    )

    service = out / "retrainer.service"
    assert f'"{odd.parent}/100%% nightly.toml"' in service.read_text()
    verified = systemd_verify(service, out / "retrainer.timer", user=False, tmp_path=tmp_path)
    assert verified.returncode == 0, verified.stderr


@pytest.mark.parametrize("at", ["24:00", "2:60", "0230", "noon", ""])
def test_a_time_that_is_not_hh_mm_is_bad_input(at: str) -> None:
    with pytest.raises(BadInputError, match="expected HH:MM"):
        parse_at(at)


def test_times_are_read_as_hours_and_minutes() -> None:
    assert [parse_at(t) for t in ("0:00", "02:30", "23:59")] == [(0, 0), (2, 30), (23, 59)]


@pytest.mark.parametrize("kind", ["systemd", "cron"])
def test_the_commands_say_a_bad_time_is_bad_input(kind: str, config: Path, run_cli: RunCli) -> None:
    result = run_cli("schedule", kind, "--at", "25:00", "--config", str(config))

    assert result.returncode == 2
    assert "--at '25:00': expected HH:MM" in result.stderr


def test_a_missing_config_file_is_bad_input(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("schedule", "cron", "--at", "02:00", "--config", str(tmp_path / "no.toml"))

    assert result.returncode == 2
    assert "does not exist" in result.stderr


def cron_line(run_cli: RunCli, config: Path, at: str = "02:30") -> str:
    result = run_cli("schedule", "cron", "--at", at, "--config", str(config))
    assert result.returncode == 0, result.stderr
    (line,) = result.stdout.splitlines()
    return line


def test_the_cron_line_passes_crontab_n_and_names_absolute_paths(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    line = cron_line(run_cli, config, at="03:07")
    crontab = tmp_path / "crontab"
    crontab.write_text(line + "\n")

    checked = subprocess.run(
        [tool("crontab"), "-n", str(crontab)], capture_output=True, text=True, timeout=30
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert line.startswith("7 3 * * * ")
    root = (tmp_path / "root").resolve()
    assert f"mkdir -p {root}/logs && cd {root} && l=logs/cron.log && " in line
    assert (
        f"{tool('flock')} -n -E 75 .retrainer.lock.cron {VENV_RETRAINER} run "
        f'--config {config.resolve()} >> "$l" 2>&1' in line
    )
    assert len(shell_of(line)) < 800  # cron refuses 1,000: room for longer paths than these


def test_a_cron_command_too_long_for_cron_is_refused_with_the_way_out(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    deep = tmp_path.joinpath(*["a-folder-with-a-rather-long-name"] * 12)
    deep.mkdir(parents=True)
    long_config = deep / "retrainer.toml"
    long_config.write_text(config.read_text())
    result = run_cli("schedule", "cron", "--at", "02:30", "--config", str(long_config))
    assert result.returncode == 2
    assert "cron refuses 1000 or more" in result.stderr
    assert "retrainer schedule systemd" in result.stderr


def shell_of(line: str) -> str:
    """The command cron would run: the line after its five time fields, % unescaped."""
    return line.split(" ", 5)[5].replace("\\%", "%")


def test_the_cron_command_runs_the_night_and_appends_its_output_to_the_log(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    command = shell_of(cron_line(run_cli, config))

    done = subprocess.run(["/bin/sh", "-c", command], cwd="/", env=_cron_env(), timeout=180)

    assert done.returncode == 0
    root = tmp_path / "root"
    summary = read_json(root / "summary" / run_day(now_utc()) / "engine_summary.json")
    assert summary["exit_code"] == 0 and summary["succeeded"] == 1
    assert '"event": "job_completed"' in (root / "logs" / "cron.log").read_text()


def test_a_night_that_finds_the_last_one_running_does_not_start_and_says_so(
    tmp_path: Path, config: Path, run_cli: RunCli
) -> None:
    command = shell_of(cron_line(run_cli, config))
    root = tmp_path / "root"
    root.mkdir()

    with open(root / ".retrainer.lock.cron", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # as the previous night's flock holds it
        done = subprocess.run(
            ["/bin/sh", "-c", command],
            cwd="/",
            env=_cron_env(),
            timeout=60,
            capture_output=True,
            text=True,
        )

    assert done.returncode == 75 and done.stdout == ""
    said = (
        "retrainer: the nightly run failed: not started, the previous run still holds the cron lock"
    )
    (line,) = done.stderr.splitlines()  # one line, for cron's mail
    assert said in line and f"(log: {root}/logs/cron.log)" in line
    assert said in (root / "logs" / "cron.log").read_text()
    assert not (root / "summary").exists()


def run_cron_command(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/sh", "-c", command], cwd="/", env=env, timeout=180, capture_output=True, text=True
    )


def test_a_night_that_fails_under_cron_mails_one_line_and_logs_everything(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    (tmp_path / "conf").mkdir()
    config = nightly_config(tmp_path, small_data, symbols="NOSUCH")
    command = shell_of(cron_line(run_cli, config))

    done = run_cron_command(command, _cron_env())

    assert done.returncode == 2  # the run's own code, whatever cron makes of it
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert "retrainer: the nightly run failed: exit 2; FAILED: run " in line
    assert "did not start: exit 2 (bad input)" in line and "NOSUCH" in line
    log = (tmp_path / "root" / "logs" / "cron.log").read_text()
    assert "retrainer: symbol list: 1 bad symbol(s): NOSUCH" in log  # the run's own stderr
    assert log.rstrip().endswith(line)


def test_a_config_that_cannot_be_read_under_cron_still_mails_why(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    (tmp_path / "conf").mkdir()
    config = nightly_config(tmp_path, small_data)
    command = shell_of(cron_line(run_cli, config))
    config.write_text("[run\n")  # broken after the schedule was set up

    done = run_cron_command(command, _cron_env())

    assert done.returncode == 2
    (line,) = done.stderr.splitlines()
    assert "retrainer: the nightly run failed: exit 2; retrainer: config file" in line
    assert "not valid TOML" in line


def _cron_env() -> dict[str, str]:
    # cron's own environment: a bare PATH, HOME, no venv; PYTHONPATH only so that the
    # test plug-in (tests.support.plugins) can be imported by the run.
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/root"),
        "SHELL": "/bin/sh",
        "PYTHONPATH": str(REPO),
    }
