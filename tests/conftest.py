"""Shared fixtures: a small generated data set and the real `retrainer` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from retrainer.base.demo_data import write_demo_universe

REPO = Path(__file__).resolve().parents[1]
# A tiny network and a few epochs: end-to-end runs take seconds.
TINY_TRAINER = {"hidden_sizes": [8], "max_epochs": 4, "patience_epochs": 2, "batch_size": 512}


@pytest.fixture(scope="session")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five symbols, 150 days of hourly bars."""
    folder = tmp_path_factory.mktemp("data")
    write_demo_universe(folder, n_symbols=5, days=150)
    return folder


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def write_config(path: Path, sections: Mapping[str, Mapping[str, Any]]) -> Path:
    lines = []
    for section, table in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in table.items()]
        lines.append("")
    path.write_text("\n".join(lines))
    return path


def cli_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETRAINER_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra or {})
    return env


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(tmp_path: Path) -> RunCli:
    """Run `python -m retrainer ARGS` as a real child process."""

    def run(
        *args: str, timeout: float = 180, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "retrainer", *args],
            cwd=tmp_path,
            env=cli_env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())


# Remote storage fixtures (SeaweedFS, the Dropbox wire-format server).
pytest_plugins = ["tests.support.storage_fixtures"]
