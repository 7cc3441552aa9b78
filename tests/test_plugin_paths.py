"""Bring your own trainer: a plug-in next to the config is found through `[trainer] paths`
by the scheduler and by every attempt's process, with no PYTHONPATH, also under cron; and
`retrainer schedule` warns about a plug-in it finds only through this shell's PYTHONPATH.
Real runs of the real command, in a bare environment."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from retrainer.base.clock import now_utc, run_day
from tests.conftest import REPO, read_json, write_config
from tests.test_item_faults import symbols_of
from tests.test_schedule import shell_of

# Runs in the attempt's process, forked by the zygote: it proves both found the module.
NEXTDOOR = """
import os

def train(ctx):
    (ctx.out_dir / "model.bin").write_bytes(ctx.symbol.encode())
    return {"value": 1.0, "pid": os.getpid()}

train.preload_modules = ()
"""


def config_beside_a_plugin(tmp_path: Path, small_data: Path, paths: list[str] | None) -> Path:
    conf = tmp_path / "conf"
    (conf / "plugins").mkdir(parents=True)
    (conf / "plugins" / "nextdoor.py").write_text(NEXTDOOR)
    trainer: dict[str, object] = {"plugin": "nextdoor:train"}
    if paths is not None:
        trainer["paths"] = paths
    return write_config(
        conf / "nightly.toml",
        {
            "run": {"root": "../root", "symbols": symbols_of(small_data)[0], "retries": 0},
            "data": {"path": str(small_data)},
            "trainer": trainer,
        },
    )


def bare_env() -> dict[str, str]:
    """What cron gives a job: no PYTHONPATH, no venv, a short PATH."""
    return {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root")}


def retrainer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m retrainer` of this checkout (-m puts the working folder, the checkout,
    first on sys.path), with no PYTHONPATH: the plug-in's folder is on no path but the
    config's. (The generated cron line runs the venv's own `retrainer` script.)"""
    return subprocess.run(
        [sys.executable, "-m", "retrainer", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_a_trainer_next_to_the_config_runs_without_pythonpath_through_trainer_paths(
    tmp_path: Path, small_data: Path
) -> None:
    config = config_beside_a_plugin(tmp_path, small_data, ["plugins"])

    plan = retrainer("run", "--config", str(config), "--dry_run", env=bare_env())
    done = retrainer("run", "--config", str(config), env=bare_env())

    assert plan.returncode == 0, plan.stderr
    assert done.returncode == 0, done.stderr
    summary = read_json(tmp_path / "root" / "summary" / run_day(now_utc()) / "engine_summary.json")
    assert summary["succeeded"] == 1 and summary["trainer"] == "nextdoor:train"
    (item,) = summary["by_symbol"].values()
    assert item["metrics"]["pid"] != summary["pid"]  # trained in the attempt's own process


def test_a_plugin_that_cannot_be_imported_names_the_config_key_that_finds_it(
    tmp_path: Path, small_data: Path
) -> None:
    config = config_beside_a_plugin(tmp_path, small_data, None)

    done = retrainer("run", "--config", str(config), env=bare_env())

    assert done.returncode == 2
    assert "cannot import nextdoor (ModuleNotFoundError" in done.stderr
    assert '[trainer] paths = ["folder"] (relative to the config file)' in done.stderr


def test_a_trainer_paths_entry_that_is_not_a_folder_is_bad_input(
    tmp_path: Path, small_data: Path
) -> None:
    config = config_beside_a_plugin(tmp_path, small_data, ["plugin"])

    done = retrainer("run", "--config", str(config), env=bare_env())

    assert done.returncode == 2
    assert f"trainer.paths: {tmp_path / 'conf' / 'plugin'} is not a folder" in done.stderr


def test_schedule_warns_when_the_plugin_is_found_only_through_this_shells_pythonpath(
    tmp_path: Path, small_data: Path
) -> None:
    config = config_beside_a_plugin(tmp_path, small_data, None)
    shell = {**bare_env(), "PYTHONPATH": str(tmp_path / "conf" / "plugins")}

    for kind in ("cron", "systemd"):
        args = ["schedule", kind, "--at", "02:30", "--config", str(config)]
        done = retrainer(*args, *(["--print"] if kind == "systemd" else []), env=shell)
        assert done.returncode == 0, done.stderr
        assert "retrainer: warning: trainer.plugin 'nextdoor:train': nextdoor is found here " in (
            done.stderr
        )
        assert f"only through PYTHONPATH ({tmp_path / 'conf' / 'plugins'})" in done.stderr
        assert '  [trainer]\n  paths = ["plugins"]\n' in done.stderr
        assert "warning" not in done.stdout  # stdout is the crontab line or the units

    with config.open("a") as file:
        file.write('paths = ["plugins"]\n')  # the [trainer] table is the file's last
    fixed = retrainer("schedule", "cron", "--at", "02:30", "--config", str(config), env=shell)
    assert fixed.returncode == 0 and fixed.stderr == ""


def test_schedule_names_the_retrainer_variables_the_scheduled_run_will_not_have(
    tmp_path: Path, small_data: Path
) -> None:
    config = write_config(  # the built-in trainer: nothing else to warn about
        tmp_path / "nightly.toml", {"run": {"root": "root"}, "data": {"path": str(small_data)}}
    )
    shell = {**bare_env(), "RETRAINER_RUN__RETRIES": "5", "RETRAINER_TELEGRAM_TOKEN": "t0k3n"}

    done = retrainer("schedule", "cron", "--at", "02:30", "--config", str(config), env=shell)

    assert done.returncode == 0, done.stderr
    (warning,) = done.stderr.splitlines()
    assert warning.startswith("retrainer: warning: this shell sets RETRAINER_RUN__RETRIES, ")
    assert "RETRAINER_TELEGRAM_TOKEN; the scheduled run will not see them" in warning
    assert "t0k3n" not in done.stderr + done.stdout


def test_the_generated_cron_command_runs_the_plugin_under_env_i(
    tmp_path: Path, small_data: Path
) -> None:
    config = config_beside_a_plugin(tmp_path, small_data, ["plugins"])
    made = retrainer(
        "schedule", "cron", "--at", "02:30", "--config", str(config), env={"PYTHONPATH": str(REPO)}
    )
    assert made.returncode == 0, made.stderr

    done = subprocess.run(
        ["env", "-i", "/bin/sh", "-c", shell_of(made.stdout.strip())],
        cwd="/",
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert done.returncode == 0, done.stderr + (tmp_path / "root/logs/cron.log").read_text()
    assert done.stdout == done.stderr == ""  # nothing for cron to mail
    summary = read_json(tmp_path / "root" / "summary" / run_day(now_utc()) / "engine_summary.json")
    assert summary["exit_code"] == 0 and summary["succeeded"] == 1
