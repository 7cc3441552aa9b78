"""Nightly runs that upload to S3 (a real SeaweedFS) and Dropbox (the wire-format server):
every artifact stored and verified, failures kept pending, `retrainer sync`,
`retrainer verify --remote`."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench.seaweed import SeaweedServer
from retrainer.base.artifacts import MANIFEST_NAME, Layout, parse_manifest, sha256_bytes
from retrainer.base.clock import now_utc, run_day
from retrainer.base.config import DEFAULT_TRAINER
from retrainer.ledger.journal import read_ledger
from tests.conftest import TINY_TRAINER, RunCli, cli_env, read_json, write_config
from tests.support.dropbox_server import DropboxTestServer
from tests.support.storage_fixtures import DROPBOX_ENV, new_bucket, raw_s3

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
PREFIX = "nightly"


@contextlib.contextmanager
def background_run(
    config: Path, cwd: Path, env: dict[str, str], stdout: int
) -> Iterator[subprocess.Popen[str]]:
    """`retrainer run` in the background; killed if the test leaves it running."""
    run = subprocess.Popen(
        [sys.executable, "-m", "retrainer", "run", "--config", str(config)],
        cwd=cwd,
        env=cli_env(env),
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield run
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()


def config_for(
    tmp_path: Path,
    data: Path,
    storage: dict[str, Any],
    params: dict[str, Any] | None = None,
    plugin: str = "tests.support.remote_plugins:gated",
) -> Path:
    return write_config(
        tmp_path / "retrainer.toml",
        {
            "run": {
                "root": str(tmp_path / "root"),
                "symbols": ",".join(SYMBOLS),
                "retries": 0,
                "mode": "sequential",
            },
            "data": {"path": str(data)},
            "trainer": {"plugin": plugin, "params": params or {}},
            "storage": {"prefix": PREFIX, "max_attempts": 2, "upload_partials": True, **storage},
        },
    )


def s3_storage(server: SeaweedServer, bucket: str) -> dict[str, Any]:
    return {
        "kind": "s3",
        "bucket": bucket,
        "endpoint_url": server.endpoint_url,
        "addressing_style": "path",
        "region": "us-east-1",
    }


def statuses(tmp_path: Path) -> dict[str, Any]:
    day = run_day(now_utc())
    entries = read_ledger(
        Layout(tmp_path / "root").status_path(day), Layout(tmp_path / "root").journal_path(day)
    ).entries
    return {s: e for s, e in entries.items()}


def local_manifest(tmp_path: Path, artifact_dir: str) -> dict[str, str]:
    raw = (tmp_path / "root" / artifact_dir / MANIFEST_NAME).read_bytes()
    return {**parse_manifest(raw.decode()), MANIFEST_NAME: sha256_bytes(raw)}


def engine_log(tmp_path: Path) -> str:
    return (tmp_path / "root" / "logs" / run_day(now_utc()) / "engine.log").read_text()


class TestS3Run:
    def test_a_nightly_run_stores_every_artifact_in_the_bucket_verified(
        self, tmp_path: Path, small_data: Path, seaweed: SeaweedServer, run_cli: RunCli
    ) -> None:
        bucket = new_bucket(seaweed)
        config = config_for(
            tmp_path, small_data, s3_storage(seaweed, bucket), TINY_TRAINER, plugin=DEFAULT_TRAINER
        )  # the real trainer and its artifacts

        result = run_cli("run", "--config", str(config), env=seaweed.env)

        assert result.returncode == 0, result.stderr
        raw, day = raw_s3(seaweed), run_day(now_utc())
        for symbol, entry in statuses(tmp_path).items():
            assert entry.state == "success" and entry.upload == "uploaded", symbol
            manifest = local_manifest(tmp_path, entry.artifact_dir)
            assert {"model.bin", "features.parquet", "metrics.json"} <= set(manifest)
            for name, digest in manifest.items():
                key = f"{PREFIX}/{entry.artifact_dir}/{name}"
                head = raw.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
                assert head["Metadata"]["sha256"] == digest
                assert base64.b64decode(head["ChecksumSHA256"]).hex() == digest
        for key in (
            f"runs/{day}/costs.json",
            f"runs/{day}/status.json",
            f"summary/{day}/engine_summary.json",
        ):
            raw.head_object(Bucket=bucket, Key=f"{PREFIX}/{key}")
        assert not (tmp_path / "root" / "runs" / day / ".uploads-pending").exists()
        log = engine_log(tmp_path)
        assert '"event": "upload_succeeded"' in log and f"s3://{bucket}/{PREFIX}/models/" in log
        verify = run_cli("verify", "--remote", "--config", str(config), env=seaweed.env)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "3 symbols checked" in verify.stdout

    def test_verify_remote_names_an_object_that_was_replaced_by_other_bytes(
        self, tmp_path: Path, small_data: Path, seaweed: SeaweedServer, run_cli: RunCli
    ) -> None:
        bucket = new_bucket(seaweed)
        config = config_for(tmp_path, small_data, s3_storage(seaweed, bucket))
        assert run_cli("run", "--config", str(config), env=seaweed.env).returncode == 0
        entry = statuses(tmp_path)["ETHUSDT"]
        key = f"{PREFIX}/{entry.artifact_dir}/model.bin"
        raw = raw_s3(seaweed)
        recorded = raw.head_object(Bucket=bucket, Key=key)["Metadata"]
        # A bad copy that kept the metadata: only the server's own checksum can tell.
        raw.put_object(
            Bucket=bucket, Key=key, Body=b"corrupted", Metadata=recorded, ChecksumAlgorithm="SHA256"
        )

        verify = run_cli("verify", "--remote", "--config", str(config), env=seaweed.env)

        assert verify.returncode == 1
        assert f"ETHUSDT: s3://{bucket}/{key}: sha256 mismatch" in verify.stdout
        assert "1 with problems" in verify.stdout

    def test_an_s3_server_stopped_mid_run_keeps_results_and_sync_uploads_them_later(
        self, tmp_path: Path, small_data: Path, own_seaweed: SeaweedServer, run_cli: RunCli
    ) -> None:
        bucket = new_bucket(own_seaweed)
        gate = tmp_path / "gate"
        config = config_for(
            tmp_path,
            small_data,
            s3_storage(own_seaweed, bucket),
            {"gate_file": str(gate), "free": ["BTCUSDT"]},
        )
        with background_run(config, tmp_path, own_seaweed.env, subprocess.PIPE) as run:
            wait_for(
                lambda: (
                    statuses(tmp_path).get("BTCUSDT") is not None
                    and statuses(tmp_path)["BTCUSDT"].upload == "uploaded"
                )
            )
            own_seaweed.stop()  # the store goes away while ETHUSDT and SOLUSDT train
            gate.touch()
            _, stderr = run.communicate(timeout=180)

        assert run.returncode == 0, stderr
        after_run = statuses(tmp_path)
        assert {s: e.state for s, e in after_run.items()} == dict.fromkeys(SYMBOLS, "success")
        assert after_run["BTCUSDT"].upload == "uploaded"
        for symbol in ("ETHUSDT", "SOLUSDT"):
            assert after_run[symbol].upload == "pending"
            assert f"s3://{bucket}/{PREFIX}/models/{symbol}/" in after_run[symbol].upload_error
            assert (tmp_path / "root" / after_run[symbol].artifact_dir / "model.bin").is_file()
        assert '"event": "upload_failed"' in engine_log(tmp_path)

        still_down = run_cli("sync", "--config", str(config), env=own_seaweed.env)
        assert still_down.returncode == 1
        assert statuses(tmp_path)["ETHUSDT"].upload == "pending"

        own_seaweed.start()
        synced = run_cli("sync", "--config", str(config), env=own_seaweed.env)

        assert synced.returncode == 0, synced.stdout + synced.stderr
        assert {e.upload for e in statuses(tmp_path).values()} == {"uploaded"}
        verify = run_cli("verify", "--remote", "--config", str(config), env=own_seaweed.env)
        assert verify.returncode == 0, verify.stdout
        assert not (tmp_path / "root" / "runs" / run_day(now_utc()) / ".uploads-pending").exists()

    def test_the_next_nightly_run_uploads_what_the_last_one_left_pending_first(
        self, tmp_path: Path, small_data: Path, own_seaweed: SeaweedServer, run_cli: RunCli
    ) -> None:
        bucket = new_bucket(own_seaweed)
        config = config_for(tmp_path, small_data, s3_storage(own_seaweed, bucket))
        own_seaweed.stop()
        first = run_cli("run", "--config", str(config), env=own_seaweed.env)
        assert first.returncode == 0, first.stderr
        assert {e.upload for e in statuses(tmp_path).values()} == {"pending"}

        own_seaweed.start()
        second = run_cli("run", "--config", str(config), env=own_seaweed.env)

        assert second.returncode == 0, second.stderr
        assert {e.upload for e in statuses(tmp_path).values()} == {"uploaded"}
        log = engine_log(tmp_path)
        assert log.rindex('"event": "uploads_synced"') < log.rindex('"event": "job_started"')
        assert (
            run_cli("verify", "--remote", "--config", str(config), env=own_seaweed.env).returncode
            == 0
        )


class TestDropboxRun:
    def test_a_nightly_run_stores_every_artifact_in_dropbox_verified(
        self, tmp_path: Path, small_data: Path, dropbox_server: DropboxTestServer, run_cli: RunCli
    ) -> None:
        config = config_for(
            tmp_path, small_data, {"kind": "dropbox", "endpoint_url": dropbox_server.url}
        )
        # The store is busy once and fails once: the SDK waits and retries both.
        dropbox_server.fail_next("2/files/upload", 429, retry_after_s=1)
        dropbox_server.fail_next("2/files/get_metadata", 500)

        result = run_cli("run", "--config", str(config), env=DROPBOX_ENV)

        assert result.returncode == 0, result.stderr
        for symbol, entry in statuses(tmp_path).items():
            assert entry.upload == "uploaded", (symbol, entry.upload_error)
            for name, digest in local_manifest(tmp_path, entry.artifact_dir).items():
                stored = dropbox_server.read(f"/{PREFIX}/{entry.artifact_dir}/{name}")
                assert hashlib.sha256(stored).hexdigest() == digest
        day = run_day(now_utc())
        assert f"/{PREFIX}/summary/{day}/engine_summary.json" in dropbox_server.paths()
        assert DROPBOX_ENV["DROPBOX_REFRESH_TOKEN"] not in engine_log(tmp_path)
        verify = run_cli("verify", "--remote", "--config", str(config), env=DROPBOX_ENV)
        assert verify.returncode == 0, verify.stdout + verify.stderr

    def test_verify_remote_finds_a_dropbox_file_changed_behind_our_back(
        self, tmp_path: Path, small_data: Path, dropbox_server: DropboxTestServer, run_cli: RunCli
    ) -> None:
        config = config_for(
            tmp_path, small_data, {"kind": "dropbox", "endpoint_url": dropbox_server.url}
        )
        assert run_cli("run", "--config", str(config), env=DROPBOX_ENV).returncode == 0
        entry = statuses(tmp_path)["SOLUSDT"]
        dropbox_server.overwrite(f"/{PREFIX}/{entry.artifact_dir}/config.json", b"{}")

        verify = run_cli("verify", "--remote", "--config", str(config), env=DROPBOX_ENV)

        assert verify.returncode == 1
        assert (
            f"SOLUSDT: dropbox:/{PREFIX}/{entry.artifact_dir}/config.json: sha256 mismatch"
            in verify.stdout
        )

    def test_partial_outputs_go_up_while_their_attempt_still_runs(
        self, tmp_path: Path, small_data: Path, dropbox_server: DropboxTestServer
    ) -> None:
        gate = tmp_path / "gate"
        config = config_for(
            tmp_path,
            small_data,
            {"kind": "dropbox", "endpoint_url": dropbox_server.url},
            {"gate_file": str(gate), "free": ["BTCUSDT"]},
        )
        with background_run(config, tmp_path, DROPBOX_ENV, subprocess.DEVNULL) as run:
            # ETHUSDT has saved its partial output and waits at the gate: still running.
            wait_for(
                lambda: any(
                    p.startswith(f"/{PREFIX}/models/ETHUSDT/") and p.endswith("/features.json")
                    for p in dropbox_server.paths()
                )
            )
            assert statuses(tmp_path)["ETHUSDT"].state == "running"
            assert not any(
                p.startswith(f"/{PREFIX}/models/ETHUSDT/") and p.endswith("/model.bin")
                for p in dropbox_server.paths()
            )
            gate.touch()
            _, stderr = run.communicate(timeout=180)
        assert run.returncode == 0, stderr
        assert {e.upload for e in statuses(tmp_path).values()} == {"uploaded"}

    def test_a_dropbox_run_without_credentials_is_bad_input_naming_the_variables(
        self, tmp_path: Path, small_data: Path, dropbox_server: DropboxTestServer, run_cli: RunCli
    ) -> None:
        config = config_for(
            tmp_path, small_data, {"kind": "dropbox", "endpoint_url": dropbox_server.url}
        )

        result = run_cli("run", "--config", str(config))

        assert result.returncode == 2
        assert "DROPBOX_REFRESH_TOKEN" in result.stderr and "DROPBOX_APP_KEY" in result.stderr


def test_sync_without_configured_storage_is_bad_input(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("sync", "--root", str(tmp_path))
    assert result.returncode == 2
    assert "no storage is configured" in result.stderr


def test_a_summary_reports_each_symbols_upload_state(
    tmp_path: Path, small_data: Path, seaweed: SeaweedServer, run_cli: RunCli
) -> None:
    config = config_for(tmp_path, small_data, s3_storage(seaweed, new_bucket(seaweed)))
    assert run_cli("run", "--config", str(config), env=seaweed.env).returncode == 0
    summary = read_json(tmp_path / "root" / "summary" / run_day(now_utc()) / "engine_summary.json")
    assert {s["upload"] for s in summary["by_symbol"].values()} == {"uploaded"}


def wait_for(condition: Any, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    pytest.fail("condition not met in time")
