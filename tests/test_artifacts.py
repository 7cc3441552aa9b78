"""Atomic writes, sha256 manifests and the plan's run-or-skip decision."""

from __future__ import annotations

import errno
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from retrainer.base.artifacts import (
    MANIFEST_NAME,
    Layout,
    atomic_write_bytes,
    verify_manifest,
    write_manifest,
)
from retrainer.base.clock import attempt_stamp, run_day
from retrainer.ledger.entries import Attempt, ItemState, LedgerEntry
from retrainer.plan.planner import Action, decide

NIGHT = datetime(2026, 11, 23, 2, 0, 5, tzinfo=UTC)


def attempt_folder(root: Path) -> Path:
    folder = Layout(root).new_attempt_dir("BTCUSDT", NIGHT)
    (folder / "model.bin").write_bytes(b"weights")
    (folder / "metrics.json").write_text('{"net_sharpe": 1.0}')
    return folder


def success(root: Path, folder: Path, manifest_sha: str) -> LedgerEntry:
    attempt = Attempt(
        number=1,
        state=ItemState.SUCCESS,
        started_at="t",
        device="cpu",
        threads=1,
        artifact_dir=str(folder.relative_to(root)),
    )
    return LedgerEntry(
        symbol="BTCUSDT",
        state=ItemState.SUCCESS,
        updated_at="t",
        attempts=(attempt,),
        artifact_dir=attempt.artifact_dir,
        manifest_sha256=manifest_sha,
    )


def test_names_follow_the_output_contract() -> None:
    assert run_day(NIGHT) == "20261123Z"
    assert attempt_stamp(NIGHT) == "20261123_020005Z"


def test_two_attempts_in_one_second_never_share_a_folder(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    first = layout.new_attempt_dir("ETHUSDT", NIGHT)
    second = layout.new_attempt_dir("ETHUSDT", NIGHT)
    assert first.name == "20261123_020005Z" and second.name == "20261123_020005Z-1"


def test_an_atomic_write_that_fails_leaves_the_old_file_and_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "status.json"
    target.write_text("old")

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_bytes(target, b"new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]


def test_the_manifest_lists_every_artifact_in_sha256sum_format(tmp_path: Path) -> None:
    folder = attempt_folder(tmp_path)
    manifest_sha = write_manifest(folder)
    lines = (folder / MANIFEST_NAME).read_text().splitlines()
    metrics_sha = hashlib.sha256((folder / "metrics.json").read_bytes()).hexdigest()
    assert lines == [
        f"{metrics_sha}  metrics.json",
        f"{hashlib.sha256(b'weights').hexdigest()}  model.bin",
    ]
    assert manifest_sha == hashlib.sha256((folder / MANIFEST_NAME).read_bytes()).hexdigest()
    assert verify_manifest(folder, manifest_sha) == []


def test_verification_names_a_changed_a_missing_and_a_replaced_manifest(tmp_path: Path) -> None:
    folder = attempt_folder(tmp_path)
    manifest_sha = write_manifest(folder)
    (folder / "model.bin").write_bytes(b"other weights")
    assert verify_manifest(folder) == [f"{folder / 'model.bin'}: sha256 mismatch"]
    (folder / "model.bin").unlink()
    assert verify_manifest(folder) == [f"{folder / 'model.bin'}: missing"]
    write_manifest(folder)  # someone re-hashed the folder by hand
    assert "differs from the one recorded" in verify_manifest(folder, manifest_sha)[0]


def test_the_plan_skips_only_a_success_whose_artifacts_verify(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    folder = attempt_folder(tmp_path)
    entry = success(tmp_path, folder, write_manifest(folder))
    assert decide(entry, layout, force=False)[0] is Action.SKIP
    assert decide(entry, layout, force=True) == (Action.RUN, "--force")
    assert decide(None, layout, force=False) == (Action.RUN, "not trained today")
    (folder / "metrics.json").write_text("{}")
    action, why = decide(entry, layout, force=False)
    assert action is Action.RUN and "metrics.json: sha256 mismatch" in why


def test_the_plan_reruns_a_failure_and_says_why(tmp_path: Path) -> None:
    failed = Attempt(
        number=1,
        state=ItemState.TIMEOUT,
        started_at="t",
        artifact_dir="x",
        device="cpu",
        threads=1,
        reason="timed out after 45 min",
    )
    entry = LedgerEntry(
        symbol="BTCUSDT", state=ItemState.TIMEOUT, updated_at="t", attempts=(failed,)
    )
    assert decide(entry, Layout(tmp_path), force=False) == (
        Action.RUN,
        "earlier run today ended timeout: timed out after 45 min",
    )
