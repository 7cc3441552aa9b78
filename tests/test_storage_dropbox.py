"""The Dropbox backend: the real SDK against our wire-format server on loopback. Upload
sessions, content_hash, 429 Retry-After, 5xx, the refresh-token flow, secrets.
(The behaviour shared with every backend is in test_storage.py.)"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from dropbox.content_hash import DropboxContentHasher

from retrainer.base.config import StorageSettings
from retrainer.base.errors import BadInputError
from retrainer.mirror.storage import UploadError, make_storage
from retrainer.mirror.storage.dropbox import DropboxCredentials, DropboxStorage, load_credentials
from tests.support.dropbox_server import (
    APP_KEY,
    APP_SECRET,
    REFRESH_TOKEN,
    DropboxTestServer,
    dropbox_content_hash,
)
from tests.support.storage_fixtures import DROPBOX_ENV, dropbox_client

KEY = "models/BTCUSDT/20261123_020000Z/model.bin"
PATH = f"/nightly/{KEY}"
MB = 1 << 20
SESSION_ROUTES = [
    "2/files/upload_session/start",
    "2/files/upload_session/append_v2",
    "2/files/upload_session/finish",
]


def ok_statuses(server: DropboxTestServer, route: str) -> list[int]:
    return [s.status for s in server.seen(route)]


def test_a_file_over_the_threshold_goes_up_in_an_upload_session_of_chunks(
    dropbox_server: DropboxTestServer, tmp_path: Path
) -> None:
    storage = dropbox_client(dropbox_server, session_threshold_bytes=4 * MB, chunk_bytes=2 * MB)
    source = tmp_path / "model.bin"
    source.write_bytes(os.urandom(9 * MB + 123))

    result = storage.put_file(source, KEY)

    assert ok_statuses(dropbox_server, "2/files/upload_session/start") == [200]
    assert ok_statuses(dropbox_server, "2/files/upload_session/append_v2") == [200] * 3
    assert ok_statuses(dropbox_server, "2/files/upload_session/finish") == [200]
    assert dropbox_server.seen("2/files/upload") == []
    assert dropbox_server.read(PATH) == source.read_bytes()
    assert result.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()


def test_a_small_file_goes_up_in_one_call(
    dropbox_server: DropboxTestServer, tmp_path: Path
) -> None:
    source = tmp_path / "metrics.json"
    source.write_bytes(b"{}")
    dropbox_client(dropbox_server).put_file(source, "metrics.json")
    assert ok_statuses(dropbox_server, "2/files/upload") == [200]
    assert all(dropbox_server.seen(route) == [] for route in SESSION_ROUTES)


def test_a_rerun_overwrites_the_file_a_session_stored_before(
    dropbox_server: DropboxTestServer, tmp_path: Path
) -> None:
    storage = dropbox_client(dropbox_server, session_threshold_bytes=1 * MB, chunk_bytes=MB)
    first, second = tmp_path / "a.bin", tmp_path / "b.bin"
    first.write_bytes(os.urandom(3 * MB))
    second.write_bytes(os.urandom(3 * MB))
    storage.put_file(first, KEY)

    storage.put_file(second, KEY)

    assert dropbox_server.read(PATH) == second.read_bytes()


def test_the_servers_content_hash_is_the_sdk_helpers_over_4_mib_blocks() -> None:
    data = os.urandom(9 * MB)
    hasher = DropboxContentHasher()
    hasher.update(data)
    assert dropbox_content_hash(data) == hasher.hexdigest()
    assert dropbox_content_hash(data) != hashlib.sha256(data).hexdigest()


def test_a_429_is_retried_after_the_servers_retry_after(
    dropbox_server: DropboxTestServer, tmp_path: Path
) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    dropbox_server.fail_next("2/files/upload", 429, retry_after_s=1)

    dropbox_client(dropbox_server).put_file(source, KEY)

    busy, stored = dropbox_server.seen("2/files/upload")
    assert (busy.status, stored.status) == (429, 200)
    assert stored.at - busy.at >= 1.0  # the SDK waited as long as it was told
    assert dropbox_server.read(PATH) == b"weights"


def test_a_500_is_retried_and_the_upload_goes_through(
    dropbox_server: DropboxTestServer, tmp_path: Path
) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    dropbox_server.fail_next("2/files/upload", 500)

    result = dropbox_client(dropbox_server).put_file(source, KEY)

    assert ok_statuses(dropbox_server, "2/files/upload") == [500, 200]
    assert not result.skipped and dropbox_server.read(PATH) == b"weights"


def test_5xx_past_the_retries_give_an_upload_error_naming_the_path(
    dropbox_server: DropboxTestServer, tmp_path: Path
) -> None:
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights")
    dropbox_server.fail_next("2/files/upload", 500, times=3)

    with pytest.raises(UploadError) as caught:
        dropbox_client(dropbox_server, max_retries_on_error=1).put_file(source, KEY)

    assert f"dropbox:{PATH}" in str(caught.value)
    assert REFRESH_TOKEN not in str(caught.value) and APP_SECRET not in str(caught.value)


def test_a_missing_file_is_a_409_path_not_found_and_does_not_exist(
    dropbox_server: DropboxTestServer,
) -> None:
    storage = dropbox_client(dropbox_server)
    assert not storage.exists(KEY)
    assert ok_statuses(dropbox_server, "2/files/get_metadata") == [409]


def test_short_lived_access_tokens_are_refreshed_from_the_refresh_token(
    dropbox_server: DropboxTestServer, tmp_path: Path
) -> None:
    dropbox_server.state.token_lifetime_s = 60  # inside the SDK's refresh margin
    storage = dropbox_client(dropbox_server)
    for n in range(3):
        source = tmp_path / f"{n}.bin"
        source.write_bytes(os.urandom(1000))
        storage.put_file(source, f"models/{n}.bin")

    assert len(dropbox_server.seen("oauth2/token")) > 1
    every_status = [s.status for s in dropbox_server.state.seen]
    assert 401 not in every_status


def test_a_revoked_refresh_token_fails_without_showing_it(
    dropbox_server: DropboxTestServer, tmp_path: Path
) -> None:
    revoked = "revoked-refresh-token-c2VjcmV0LXNlY3JldA"
    storage = DropboxStorage(
        DropboxCredentials(revoked, APP_KEY, APP_SECRET), dropbox_client(dropbox_server).options
    )
    source = tmp_path / "model.bin"
    source.write_bytes(b"x")

    with pytest.raises(UploadError) as caught:
        storage.put_file(source, KEY)

    assert revoked not in str(caught.value) and APP_SECRET not in str(caught.value)
    assert "AuthError" in str(caught.value) or "BadInputError" in str(caught.value)


def test_credentials_come_from_the_environment_before_the_secrets_file(tmp_path: Path) -> None:
    secrets = tmp_path / "dropbox.toml"
    secrets.write_text('refresh_token = "from-file"\napp_key = "key-from-file"\n')

    from_file = load_credentials(secrets, environ={})
    from_env = load_credentials(secrets, environ={"DROPBOX_REFRESH_TOKEN": "from-env"})

    assert (from_file.refresh_token, from_file.app_key, from_file.app_secret) == (
        "from-file",
        "key-from-file",
        None,
    )
    assert (from_env.refresh_token, from_env.app_key) == ("from-env", "key-from-file")
    assert "from-env" not in repr(from_env)


def test_missing_credentials_are_bad_input_naming_the_variables_not_values() -> None:
    with pytest.raises(BadInputError) as caught:
        load_credentials(None, environ={"DROPBOX_APP_SECRET": "s3cr3t-value"})
    assert "DROPBOX_REFRESH_TOKEN" in str(caught.value)
    assert "s3cr3t-value" not in str(caught.value)


def test_the_registry_builds_a_dropbox_client_from_settings_and_environment(
    dropbox_server: DropboxTestServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name, value in DROPBOX_ENV.items():
        monkeypatch.setenv(name, value)
    client = make_storage(
        StorageSettings(kind="dropbox", prefix="prod", endpoint_url=dropbox_server.url)
    )
    assert isinstance(client, DropboxStorage)
    source = tmp_path / "m.json"
    source.write_bytes(b"{}")
    assert client.put_file(source, "a/m.json").uri == "dropbox:/prod/a/m.json"
    assert dropbox_server.read("/prod/a/m.json") == b"{}"
