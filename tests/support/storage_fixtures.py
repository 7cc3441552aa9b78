"""Fixtures for remote storage: a real SeaweedFS, the Dropbox wire-format server, clients.

A session-wide SeaweedFS serves the tests that only need a bucket (each test gets its own
bucket); a test that stops the server mid-run starts its own (`own_seaweed`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from bench.seaweed import SeaweedServer
from retrainer.mirror.storage.dropbox import DropboxCredentials, DropboxOptions, DropboxStorage
from retrainer.mirror.storage.s3 import S3Options, S3Storage
from tests.support.dropbox_server import APP_KEY, APP_SECRET, REFRESH_TOKEN, DropboxTestServer


def _assert_gone(pid: int | None) -> None:
    if pid is None:
        return
    alive = psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    assert not alive, f"weed (pid {pid}) survived its fixture"


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = SeaweedServer(tmp_path_factory.mktemp("seaweed")).start()
    pid = server.pid
    yield server
    server.stop()
    _assert_gone(pid)


@pytest.fixture
def own_seaweed(tmp_path: Path) -> Iterator[SeaweedServer]:
    """A SeaweedFS of this test's own, which the test may stop and start again."""
    server = SeaweedServer(tmp_path / "seaweed").start()
    pids: list[int | None] = [server.pid]
    original_start = server.start

    def start_again(timeout_s: float = 60.0) -> SeaweedServer:
        started = original_start(timeout_s)
        pids.append(started.pid)
        return started

    server.start = start_again  # type: ignore[method-assign]
    yield server
    server.stop()
    for pid in pids:
        _assert_gone(pid)


@pytest.fixture
def aws_env(seaweed: SeaweedServer, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The standard AWS chain, through the environment, as a nightly job would have it."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in seaweed.env.items():
        monkeypatch.setenv(name, value)
    return seaweed.env


def new_bucket(server: SeaweedServer) -> str:
    import boto3

    name = f"t-{uuid.uuid4().hex[:20]}"
    client: Any = boto3.session.Session(
        aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    ).client("s3", endpoint_url=server.endpoint_url)
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture
def bucket(seaweed: SeaweedServer, aws_env: dict[str, str]) -> str:
    return new_bucket(seaweed)


def s3_client(endpoint_url: str, bucket: str, **options: Any) -> S3Storage:
    defaults: dict[str, Any] = {"prefix": "nightly", "max_attempts": 2, "addressing_style": "path"}
    return S3Storage(S3Options(bucket=bucket, endpoint_url=endpoint_url, **{**defaults, **options}))


def raw_s3(server: SeaweedServer) -> Any:
    """A plain boto3 client, for reading back or tampering behind our client's back."""
    import boto3

    return boto3.session.Session(
        aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    ).client("s3", endpoint_url=server.endpoint_url)


@pytest.fixture
def dropbox_server() -> Iterator[DropboxTestServer]:
    server = DropboxTestServer().start()
    yield server
    server.stop()


DROPBOX_CREDENTIALS = DropboxCredentials(REFRESH_TOKEN, APP_KEY, APP_SECRET)
DROPBOX_ENV = {
    "DROPBOX_REFRESH_TOKEN": REFRESH_TOKEN,
    "DROPBOX_APP_KEY": APP_KEY,
    "DROPBOX_APP_SECRET": APP_SECRET,
}


def dropbox_client(server: DropboxTestServer, **options: Any) -> DropboxStorage:
    defaults: dict[str, Any] = {
        "prefix": "nightly",
        "max_retries_on_error": 2,
        "max_retries_on_rate_limit": 3,
        "timeout_s": 30.0,
    }
    return DropboxStorage(
        DROPBOX_CREDENTIALS, DropboxOptions(endpoint_url=server.url, **{**defaults, **options})
    )
