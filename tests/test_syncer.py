"""Durability off the scheduler's loop: the fsyncs of a run happen in a thread of their own,
in order (artifacts, then their manifest, then the ledger line that names it)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from retrainer.base.clock import now_utc, run_day
from retrainer.ledger.fsync import Syncer
from tests.conftest import cli_env, read_json
from tests.test_item_faults import faulty_config, symbols_of

FSYNC_LINE = re.compile(r"^(\d+)\s+f(?:data)?sync\(\d+<(?P<path>[^>]*)>")  # at its start


@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (make test-tools)")
def test_a_run_fsyncs_artifacts_manifests_and_ledger_lines_off_its_loop_in_order(
    tmp_path: Path, small_data: Path
) -> None:
    symbols = symbols_of(small_data)[:3]
    config = faulty_config(tmp_path, small_data, dict.fromkeys(symbols, "ok"))
    trace = tmp_path / "fsyncs.txt"
    done = subprocess.run(
        [
            "strace",
            "-f",
            "-y",
            "-qq",
            "-e",
            "trace=fsync,fdatasync",
            "-o",
            str(trace),
            sys.executable,
            "-m",
            "retrainer",
            "run",
            "--config",
            str(config),
        ],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    status = read_json(tmp_path / "root" / "runs" / run_day(now_utc()) / "status.json")
    (run,) = status["runs"]
    fsyncs = [
        (int(m[1]), m["path"]) for m in map(FSYNC_LINE.match, trace.read_text().splitlines()) if m
    ]
    ledger_at = [i for i, (_, path) in enumerate(fsyncs) if path.endswith("/ledger.jsonl")]
    for symbol in symbols:
        folder = str(tmp_path / "root" / status["symbols"][symbol]["artifact_dir"])
        manifest = [i for i, (_, path) in enumerate(fsyncs) if path == f"{folder}/sha256.txt"]
        assert len(manifest) == 1, f"{symbol}: {manifest}"
        (at,) = manifest
        tid = fsyncs[at][0]
        assert tid != run["pid"], "the manifest was fsynced on the scheduler's loop"
        for artifact in ("model.bin", "metrics.json"):
            assert any(path == f"{folder}/{artifact}" for _, path in fsyncs[:at]), artifact
        assert any(i > at for i in ledger_at), "no ledger fsync after the manifest's"
    assert not [i for i in ledger_at if fsyncs[i][0] == run["pid"]], (
        "a ledger line was fsynced on the scheduler's loop"
    )


def test_a_failed_fsync_is_raised_by_drain_and_does_not_stop_the_queue(tmp_path: Path) -> None:
    present = tmp_path / "present.txt"
    present.write_text("x")
    syncer = Syncer()
    try:
        syncer.sync(tmp_path / "missing.txt", present)
        with pytest.raises(FileNotFoundError):
            syncer.drain()
        syncer.sync(present)
        syncer.drain()  # the error was reported once; the thread goes on
    finally:
        syncer.close()
