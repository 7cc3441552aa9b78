"""Files honour the umask: what retrainer writes is readable by whom the umask allows
(an inference service or a web server under another user), not 0600 by accident."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from retrainer.base.artifacts import atomic_write_bytes, current_umask, file_mode
from tests.conftest import TINY_TRAINER, cli_env, write_config


def _cli(cwd: Path, umask: int, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "retrainer", *args],
        cwd=cwd,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        umask=umask,
    )


def _succeeds(*procs: subprocess.Popen[str]) -> None:
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, (proc.args, output)


def _modes(*paths: Path) -> dict[str, int]:
    """Every plain file at or under the paths → its permission bits."""
    found = [p for path in paths for p in [path, *path.rglob("*")] if p.is_file()]
    return {str(p): stat.S_IMODE(p.stat().st_mode) for p in sorted(found)}


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask022", "umask027"])
def test_every_file_the_commands_write_gets_the_mode_the_umask_gives(
    tmp_path: Path, small_data: Path, umask: int
) -> None:
    root, sample, units = tmp_path / "root", tmp_path / "sample", tmp_path / "units"
    textfile = tmp_path / "textfile" / "retrainer.prom"
    symbol = sorted(p.stem for p in small_data.glob("*.parquet"))[0]
    config = write_config(
        tmp_path / "modes.toml",
        {
            "run": {"root": str(root), "symbols": symbol},
            "data": {"path": str(small_data)},
            "trainer": {"params": TINY_TRAINER},
            "prometheus": {"textfile": str(textfile)},
        },
    )
    at = ("--at", "02:30", "--config", str(config))
    _succeeds(
        _cli(tmp_path, umask, "run", "--config", str(config)),
        _cli(tmp_path, umask, "data", "sample", str(sample), "--symbols", "1", "--days", "30"),
        _cli(tmp_path, umask, "schedule", "systemd", *at, "--output", str(units)),
        _cli(tmp_path, umask, "config", "init", str(tmp_path / "written.toml")),
    )
    _succeeds(_cli(tmp_path, umask, "report", "--config", str(config)))

    modes = _modes(root, sample, units, textfile, tmp_path / "written.toml")
    # What the night and the commands are known to write: every one of them is checked.
    for kind in (
        "model.bin",
        "metrics.json",
        "config.json",
        "sha256.txt",
        "features.parquet",
        "engine_summary.json",
        "status.json",
        "ledger.jsonl",
        "costs.json",
        "engine.log",
        ".retrainer.lock",
        "report.html",
        ".png",
        "retrainer.service",
        "retrainer.timer",
        "written.toml",
        "retrainer.prom",
        ".parquet",
        f"{sample.name}/.complete",
    ):
        assert any(name.endswith(kind) for name in modes), (kind, sorted(modes))
    expected = 0o666 & ~umask
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != expected}
    assert wrong == {}, f"expected {oct(expected)} under umask {oct(umask):}"


def test_the_umask_is_read_without_changing_it_from_any_thread() -> None:
    previous = os.umask(0o027)
    try:
        seen: list[int] = []
        thread = threading.Thread(target=lambda: seen.append(current_umask()))
        thread.start()
        thread.join()
        assert seen == [0o027]
        assert current_umask() == 0o027
        assert file_mode() == 0o640
        assert os.umask(0o027) == 0o027  # reading it left it as it was
    finally:
        os.umask(previous)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_an_atomic_write_gets_the_mode_the_umask_gives_and_replaces_a_file_of_another_mode(
    tmp_path: Path, umask: int, mode: int
) -> None:
    path = tmp_path / "status.json"
    path.write_bytes(b"old")
    path.chmod(0o600)
    previous = os.umask(umask)
    try:
        atomic_write_bytes(path, b"new")
    finally:
        os.umask(previous)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temp file left
