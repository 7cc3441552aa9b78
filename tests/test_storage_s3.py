"""The S3 backend against a real SeaweedFS on loopback: multipart, checksums, retries,
permanent errors. (The behaviour shared with every backend is in test_storage.py.)"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.seaweed import SECRET_KEY, SeaweedServer
from retrainer.base.config import StorageSettings, load_settings
from retrainer.base.errors import BadInputError
from retrainer.mirror.storage import UploadError, make_storage
from retrainer.mirror.storage.s3 import S3Storage
from tests.support.storage_fixtures import raw_s3, s3_client
from tests.support.tcp_proxy import CuttingProxy

KEY = "models/BTCUSDT/20261123_020000Z/model.bin"
MB = 1 << 20


@pytest.fixture
def proxy(seaweed: SeaweedServer) -> Iterator[CuttingProxy]:
    started = CuttingProxy(seaweed.ports["s3.port"]).start()
    yield started
    started.stop()


@pytest.fixture
def storage(proxy: CuttingProxy, bucket: str) -> S3Storage:
    return s3_client(proxy.url, bucket, multipart_threshold_bytes=8 * MB, chunk_bytes=8 * MB)


@pytest.fixture
def big_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.bin"
    path.write_bytes(os.urandom(20 * MB))
    return path


def test_a_20_mb_file_goes_up_in_parts_and_verifies_by_its_sha256(
    storage: S3Storage, seaweed: SeaweedServer, bucket: str, big_file: Path
) -> None:
    result = storage.put_file(big_file, KEY)

    head = raw_s3(seaweed).head_object(Bucket=bucket, Key=f"nightly/{KEY}", ChecksumMode="ENABLED")
    local = hashlib.sha256(big_file.read_bytes()).hexdigest()
    assert head["ETag"].strip('"').endswith("-3")  # 8 + 8 + 4 MB
    assert head["ChecksumSHA256"].endswith("-3")
    assert head["Metadata"]["sha256"] == local == result.sha256 == storage.checksum(KEY)
    assert (result.bytes, result.skipped) == (20 * MB, False)
    body = raw_s3(seaweed).get_object(Bucket=bucket, Key=f"nightly/{KEY}")["Body"].read()
    assert body == big_file.read_bytes()


def test_a_re_upload_of_the_same_20_mb_is_skipped_without_sending_it(
    storage: S3Storage, proxy: CuttingProxy, big_file: Path
) -> None:
    storage.put_file(big_file, KEY)
    before = proxy.bytes_up

    again = storage.put_file(big_file, KEY)

    assert again.skipped
    assert proxy.bytes_up - before < 10_000  # one HEAD, no body


def test_a_small_file_goes_up_whole_with_the_servers_sha256_checksum(
    storage: S3Storage, seaweed: SeaweedServer, bucket: str, tmp_path: Path
) -> None:
    source = tmp_path / "metrics.json"
    source.write_bytes(b'{"sharpe": 1.0}')

    storage.put_file(source, "m/metrics.json")

    head = raw_s3(seaweed).head_object(
        Bucket=bucket, Key="nightly/m/metrics.json", ChecksumMode="ENABLED"
    )
    digest = hashlib.sha256(source.read_bytes()).digest()
    assert head["ChecksumSHA256"] == base64.b64encode(digest).decode()
    assert "-" not in head["ETag"]


def test_a_connection_reset_mid_upload_is_retried_and_the_object_verifies(
    storage: S3Storage, proxy: CuttingProxy, tmp_path: Path
) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(300_000))
    proxy.cut_uploads_after(100_000, once=True)

    result = storage.put_file(source, KEY)

    assert not result.skipped
    assert storage.checksum(KEY) == hashlib.sha256(source.read_bytes()).hexdigest()


def test_a_missing_bucket_fails_at_once_naming_bucket_and_key_and_no_secret(
    seaweed: SeaweedServer, aws_env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"x")
    storage = s3_client(seaweed.endpoint_url, "no-such-bucket-here")

    with pytest.raises(UploadError) as caught:
        storage.put_file(source, KEY)

    message = str(caught.value)
    assert f"s3://no-such-bucket-here/nightly/{KEY}" in message
    assert "NoSuchBucket" in message or "404" in message
    assert SECRET_KEY not in message


def test_wrong_credentials_fail_naming_bucket_and_key_and_never_the_secret(
    seaweed: SeaweedServer, bucket: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong_secret = "Wr0ngSecretWr0ngSecretWr0ngSecretWr0ngSe"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong_secret)
    source = tmp_path / "model.bin"
    source.write_bytes(b"x")

    with pytest.raises(UploadError) as caught:
        s3_client(seaweed.endpoint_url, bucket).put_file(source, KEY)

    message = str(caught.value)
    assert f"s3://{bucket}/nightly/{KEY}" in message and "403" in message
    assert wrong_secret not in message and SECRET_KEY not in message


def test_credentials_cannot_come_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "retrainer.toml"
    config.write_text('[storage]\nkind = "s3"\nbucket = "models"\naws_secret_access_key = "abc"\n')
    with pytest.raises(BadInputError, match="storage.aws_secret_access_key: unknown key"):
        load_settings(config, environ={})


def test_s3_storage_without_a_bucket_is_bad_input(tmp_path: Path) -> None:
    config = tmp_path / "retrainer.toml"
    config.write_text('[storage]\nkind = "s3"\n')
    with pytest.raises(BadInputError, match="storage.bucket is required"):
        load_settings(config, environ={})


def test_the_registry_builds_an_s3_client_from_the_settings(aws_env: dict[str, str]) -> None:
    client = make_storage(
        StorageSettings(
            kind="s3", bucket="models", prefix="prod/", endpoint_url="http://127.0.0.1:9"
        )
    )
    assert isinstance(client, S3Storage)
    assert client.uri("a/b.json") == "s3://models/prod/a/b.json"
    assert client.describe() == "s3://models/prod at http://127.0.0.1:9"
