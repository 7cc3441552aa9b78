"""Bad input through the real command: one paragraph naming the key or file, exit 2, and
never a traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import RunCli, write_config

CASES: dict[str, tuple[str, str]] = {
    # name: (config file text, what the message must name)
    "malformed TOML": ("[run\nmode = 'hybrid'\n", "not valid TOML"),
    "an unknown key": ("[run]\nmodes = 'hybrid'\n", "run.modes: unknown key"),
    "a wrong type": ("[run]\nretries = 'many'\n", "run.retries"),
    "zero concurrency": ("[run]\nmax_concurrent = 0\n", "run.max_concurrent"),
    "a negative timeout": ("[run]\ntimeout_minutes = -5\n", "run.timeout_minutes"),
    "negative retries": ("[run]\nretries = -1\n", "run.retries"),
    "a zero memory cap": ("[run]\nmax_memory_mb = 0\n", "run.max_memory_mb"),
    "an unknown mode": ("[run]\nmode = 'turbo'\n", "run.mode"),
    "an unknown driver": ("[run]\ndriver = 'kubernetes'\n", "run.driver"),
    "an unknown section": ("[runn]\nmode = 'hybrid'\n", "runn: unknown key"),
}


def assert_refused(result: object, *named: str) -> None:
    code, stdout, stderr = (getattr(result, k) for k in ("returncode", "stdout", "stderr"))
    assert code == 2, (stdout, stderr)
    assert "Traceback" not in stdout + stderr
    for text in named:
        assert text in stderr, stderr


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_config_is_refused_naming_the_key(
    tmp_path: Path, small_data: Path, run_cli: RunCli, case: str
) -> None:
    text, named = CASES[case]
    config = tmp_path / "bad.toml"
    config.write_text(text)
    result = run_cli(
        "run", "--config", str(config), "--data", str(small_data), "--root", str(tmp_path / "root")
    )
    assert_refused(result, named)
    assert not (tmp_path / "root" / "runs").exists()


@pytest.mark.parametrize(
    "content", ["", "timestamp,open,high,low,close,volume\n", "\x00\x01 not a table"]
)
def test_with_on_bad_fail_an_empty_or_unreadable_data_file_is_refused_naming_it(
    tmp_path: Path, small_data: Path, run_cli: RunCli, content: str
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    (data / "BROKEN.csv").write_text(content)
    config = write_config(
        tmp_path / "c.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": "BROKEN"},
            "data": {"path": str(data), "on_bad": "fail"},
        },
    )
    assert_refused(run_cli("run", "--config", str(config)), "BROKEN.csv")


def test_a_missing_config_file_is_refused_naming_it(tmp_path: Path, run_cli: RunCli) -> None:
    missing = tmp_path / "nope.toml"
    assert_refused(run_cli("run", "--config", str(missing)), str(missing))
