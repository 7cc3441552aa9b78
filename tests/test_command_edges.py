"""The command at its edges, through the real `retrainer`: a reader that goes away, a root
that is a file, the spellings of a run's day, `--symbols all`, and help texts that show
every bracketed word."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import typer.main

from retrainer.cli.app import app
from tests.conftest import RunCli, cli_env, read_json, write_config

FORMS = "YYYYMMDDZ, YYYYMMDD or YYYY-MM-DD"


def config_for(tmp_path: Path, data: Path, symbols: str, **sections: Any) -> Path:
    return write_config(
        tmp_path / "retrainer.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": symbols, "retries": 0},
            "data": {"path": str(data)},
            "trainer": {
                "plugin": "tests.support.plugins:faulty",
                "params": {"pid_dir": str(tmp_path / "pids")},
            },
            **sections,
        },
    )


def one_line(text: str) -> str:
    """Help and error boxes without their frames, on one line."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# --- a reader that has gone --------------------------------------------------------------


def run_with_stdout_closed(cwd: Path, *args: str) -> tuple[int, str]:
    """The command with its stdout a pipe whose reader left before the first byte."""
    process = subprocess.Popen(
        [sys.executable, "-m", "retrainer", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=180)
    return process.returncode, stderr


def test_a_dry_run_whose_reader_has_gone_exits_0_quietly(tmp_path: Path, small_data: Path) -> None:
    config = config_for(tmp_path, small_data, "all")

    code, stderr = run_with_stdout_closed(tmp_path, "run", "--config", str(config), "--dry_run")

    assert (code, stderr) == (0, "")


def test_a_dry_run_piped_into_head_exits_0_quietly(tmp_path: Path, small_data: Path) -> None:
    config = config_for(tmp_path, small_data, "all")
    command = f"{sys.executable} -m retrainer run --config {config} --dry_run | head -1"

    result = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )

    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("Plan (dry run: nothing is written)")


def test_a_night_whose_reader_has_gone_still_trains_and_ends_with_its_own_code(
    tmp_path: Path, small_data: Path
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    (data / "ETHUSDT.parquet").write_bytes(b"PAR1 not parquet")  # a failure: exit 1
    config = config_for(tmp_path, data, "BTCUSDT,ETHUSDT")

    code, stderr = run_with_stdout_closed(tmp_path, "run", "--config", str(config))

    assert code == 1, stderr
    assert "cannot write the run's files" not in stderr and "Traceback" not in stderr
    (summary,) = (tmp_path / "root" / "summary").glob("*/engine_summary.json")
    assert read_json(summary)["by_symbol"]["BTCUSDT"]["status"] == "success"


# --- a root that is a file ----------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "status"])
def test_a_root_that_is_a_file_is_bad_input_naming_it(
    tmp_path: Path, small_data: Path, run_cli: RunCli, command: str
) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    config = config_for(tmp_path, small_data, "BTCUSDT")
    config.write_text(config.read_text().replace(str(tmp_path / "root"), str(a_file)))

    result = run_cli(command, "--config", str(config))

    assert result.returncode == 2, result.stderr
    assert f"run.root {a_file} is a file, not a folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_root_under_a_file_is_bad_input_naming_the_file(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")

    result = run_cli(
        "run",
        "--data",
        str(small_data),
        "--symbols",
        "BTCUSDT",
        env={"RETRAINER_RUN__ROOT": str(a_file / "root")},
    )

    assert result.returncode == 2, result.stderr
    assert f"run.root {a_file / 'root'} lies under the file {a_file}, not a folder" in (
        result.stderr
    )


# --- the spellings of a run's day --------------------------------------------------------


def test_every_command_that_takes_run_understands_the_day_with_or_without_z_and_dashes(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = config_for(
        tmp_path,
        small_data,
        "BTCUSDT,SOLUSDT",
        storage={"kind": "local", "path": str(tmp_path / "mirror")},
    )
    assert run_cli("run", "--config", str(config)).returncode == 0
    (day,) = [p.name for p in (tmp_path / "root" / "runs").iterdir()]  # 20261201Z
    spellings = [day, day[:-1], f"{day[:4]}-{day[4:6]}-{day[6:8]}"]
    commands = [["status", "--json"], ["verify"], ["verify", "--remote"], ["sync"], ["report"]]

    for command in commands:
        answers = {
            spelling: run_cli(*command, "--run", spelling, "--config", str(config))
            for spelling in spellings
        }
        for spelling, answer in answers.items():
            assert answer.returncode == 0, (command, spelling, answer.stderr)
        outputs = {answer.stdout for answer in answers.values()}
        assert len(outputs) == 1, (command, outputs)
        assert day in outputs.pop(), command


@pytest.mark.parametrize("command", ["status", "report", "verify", "sync"])
@pytest.mark.parametrize("spelling", ["20260230", "2026-1201", "../x"])
def test_a_run_day_in_no_accepted_form_is_bad_input_naming_the_forms(
    tmp_path: Path, run_cli: RunCli, command: str, spelling: str
) -> None:
    result = run_cli(command, "--run", spelling, "--root", str(tmp_path))

    assert result.returncode == 2, result.stdout + result.stderr
    message = one_line(result.stderr)
    assert f"Invalid value for '--run': {spelling!r} is not" in message
    assert FORMS in message


# --- --symbols all, and what topN leaves out -----------------------------------------


def plan_rows(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines() if re.match(r"[A-Z]+USDT ", line)]


def test_symbols_all_plans_every_symbol_with_a_data_file(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    pd.read_parquet(data / "BTCUSDT.parquet").assign(
        timestamp=lambda f: f["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    ).to_csv(data / "CSVUSDT.csv", index=False)
    config = config_for(tmp_path, data, "top20")

    result = run_cli("run", "--config", str(config), "--symbols", "ALL", "--dry_run")

    assert result.returncode == 0, result.stderr
    everything = sorted(p.stem for p in data.iterdir() if p.suffix in (".parquet", ".csv"))
    assert plan_rows(result.stdout) == everything
    assert f"all: the 6 symbols with a data file in {data}" in result.stdout
    # A trailing comma makes it a symbol's name, as for a topN lookalike.
    listed = run_cli("run", "--config", str(config), "--symbols", "all,", "--dry_run")
    assert listed.returncode == 2 and "ALL has no data file" in listed.stderr


def test_top_n_says_how_many_symbols_of_the_folder_it_left_out(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = config_for(tmp_path, small_data, "top2")

    result = run_cli("run", "--config", str(config), "--dry_run")

    assert result.returncode == 0, result.stderr
    assert len(plan_rows(result.stdout)) == 2
    assert f"top2: 2 of the 5 symbols with a data file in {small_data}, 3 left out" in (
        result.stdout
    )


# --- help texts ------------------------------------------------------------------------


def commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


def bracketed(text: str) -> list[str]:
    r"""What a help text shows in brackets: `\[notify]` in the source shows `[notify]`."""
    return [f"[{inner}]" for inner in re.findall(r"\\?\[([^\[\]]+)\]", text)]


def test_every_bracketed_word_of_every_help_text_is_shown(run_cli: RunCli) -> None:
    shown_somewhere = []
    for path, command in commands(typer.main.get_command(app)):
        texts = [command.help or "", *(getattr(p, "help", None) or "" for p in command.params)]
        wanted = [word for text in texts for word in bracketed(text)]
        if not wanted:
            continue
        result = run_cli(*path, "--help", env={"COLUMNS": "120"})
        assert result.returncode == 0, result.stderr
        help_text = one_line(result.stdout)
        for word in wanted:
            assert word in help_text, (path, word, help_text)
        shown_somewhere += wanted
    assert "[notify]" in shown_somewhere


def test_a_closed_reader_leaves_json_output_and_its_exit_code_alone(
    tmp_path: Path, small_data: Path
) -> None:
    """`status --json | head -c 10` must not turn a failed run's exit 1 into 0 or 74."""
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    (data / "ETHUSDT.parquet").write_bytes(b"PAR1 not parquet")
    config = config_for(tmp_path, data, "BTCUSDT,ETHUSDT")
    assert run_with_stdout_closed(tmp_path, "run", "--config", str(config))[0] == 1
    status = subprocess.run(
        [sys.executable, "-m", "retrainer", "status", "--json", "--config", str(config)],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(status.stdout)["failed"] == 1

    code, stderr = run_with_stdout_closed(tmp_path, "status", "--json", "--config", str(config))

    assert (code, stderr) == (status.returncode, "")
