"""The systemd service's start timeout: the whole night even if every attempt times out,
derived from the config and said in the unit, and under the 24 h to the next night."""

from __future__ import annotations

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import RunCli, write_config

DAY_S = 24 * 3600
CAP_S = 23 * 3600


def units(tmp_path: Path, run_cli: RunCli, run: dict[str, Any]) -> tuple[str, str, Path]:
    """The service text written for a config with these [run] keys, and the command's
    stdout and stderr."""
    config = write_config(
        tmp_path / "nightly.toml",
        {
            "run": {"root": str(tmp_path / "root"), "mode": "hybrid", **run},
            "data": {"path": str(tmp_path / "data")},
        },
    )
    out = tmp_path / "units"
    result = run_cli(
        "schedule", "systemd", "--at", "02:00", "--config", str(config), "--output", str(out)
    )
    assert result.returncode == 0, result.stderr
    return result.stdout, result.stderr, out / "retrainer.service"


def service_section(path: Path) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser["Service"]


def derivation(path: Path) -> str:
    """The comment lines above TimeoutStartSec, as one line."""
    lines = path.read_text().splitlines()
    end = next(i for i, line in enumerate(lines) if line.startswith("TimeoutStartSec="))
    start = max(i for i in range(end) if not lines[i].startswith("#")) + 1
    return " ".join(line.lstrip("#").strip() for line in lines[start:end])


def systemd_verify(service: Path) -> subprocess.CompletedProcess[str]:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is not installed (`make test` installs it)"
    runtime = service.parent / "xdg-runtime"  # the verify needs a runtime folder
    runtime.mkdir(mode=0o700, exist_ok=True)
    return subprocess.run(
        [analyze, "verify", str(service), str(service.with_suffix(".timer"))],
        capture_output=True,
        text=True,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        timeout=60,
    )


def test_the_default_nights_start_timeout_is_capped_under_a_day_and_says_so(
    tmp_path: Path, run_cli: RunCli
) -> None:
    # The defaults: top20, 2 retries, 45 min, kill grace 10 s; two at a time (the CPU
    # default, set here so that a GPU machine plans the same).
    stdout, stderr, service = units(tmp_path, run_cli, {"max_concurrent": 2})

    section = service_section(service)
    start_s, stop_s = int(section["TimeoutStartSec"]), int(section["TimeoutStopSec"])
    assert start_s == CAP_S and start_s + stop_s < DAY_S
    said = derivation(service)
    assert "20 symbols x 3 attempts (retries 2), 2 at a time: 31 rounds" in said
    assert "2710 s (45 min timeout + 10 s kill grace)" in said
    assert "= 85530 s (23.8 h), capped at 82800 s (23 h)" in said
    assert f"start timeout {CAP_S} s: 20 symbols x 3 attempts" in stdout
    assert "a night on which every attempt times out would take 23.8 h" in stderr
    assert "systemd stops it after 23 h" in stderr
    verified = systemd_verify(service)
    assert verified.returncode == 0, verified.stderr
    assert not re.search(r"retrainer\.(service|timer)", verified.stdout + verified.stderr)


def test_a_short_nights_start_timeout_is_its_worst_case_with_the_arithmetic_shown(
    tmp_path: Path, run_cli: RunCli
) -> None:
    run = {
        "symbols": "A,B,C,D,E",
        "retries": 1,
        "timeout_minutes": 20,
        "kill_grace_s": 5,
        "max_concurrent": 2,
        "backoff_cap_s": 60,
    }
    stdout, stderr, service = units(tmp_path, run_cli, run)

    start_s = int(service_section(service)["TimeoutStartSec"])
    # 5 symbols x 2 attempts, 2 at a time: 5 rounds + 1 of 1205 s; one backoff of 60 s;
    # 900 s to plan and close; 20 s for the notifier.
    assert start_s == 6 * 1205 + 60 + 900 + 20
    said = derivation(service)
    assert "5 symbols x 2 attempts (retries 1), 2 at a time: 6 rounds" in said
    assert f"= {start_s} s (2.3 h)" in said and "capped" not in said
    assert "warning" not in stderr


def test_symbols_all_counts_the_data_files_of_the_folder(tmp_path: Path, run_cli: RunCli) -> None:
    (tmp_path / "data").mkdir()
    for symbol in ("AAA", "BBB", "CCC"):
        (tmp_path / "data" / f"{symbol}.csv").write_text("timestamp\n")
    _, _, service = units(tmp_path, run_cli, {"symbols": "all", "retries": 0})
    assert "3 symbols x 1 attempt (retries 0)" in derivation(service)
