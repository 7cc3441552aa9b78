"""Storage: deleting objects and listing a folder's keys, the same on every backend (a
local folder, S3 against a real SeaweedFS, Dropbox through the real SDK against our
wire-format server): what `retrainer prune --remote` needs."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrainer.mirror.storage import StorageClient, UploadError
from retrainer.mirror.storage.local import LocalStorage
from tests.support.dropbox_server import DropboxTestServer
from tests.support.storage_fixtures import dropbox_client
from tests.test_storage import BAD_KEYS, Backend, dropbox_backend, local_backend, s3_backend

FOLDER = "models/BTCUSDT/20261123_020000Z"


def make_backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Backend:
    """The backend named by the fixture's param: local, s3 or dropbox."""
    if request.param == "local":
        return local_backend(tmp_path, monkeypatch)
    if request.param == "s3":
        return s3_backend(request, monkeypatch)
    return dropbox_backend(request)


@pytest.fixture(params=["local", "s3", "dropbox"])
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> StorageClient:
    return make_backend(request, tmp_path, monkeypatch).storage


def put(storage: StorageClient, *keys: str) -> None:
    for key in keys:
        storage.put_json({"key": key}, key)


def test_a_deleted_object_is_gone(storage: StorageClient) -> None:
    put(storage, f"{FOLDER}/model.bin", f"{FOLDER}/metrics.json")

    storage.delete(f"{FOLDER}/model.bin")

    assert not storage.exists(f"{FOLDER}/model.bin")
    assert storage.checksum(f"{FOLDER}/model.bin") is None
    assert storage.list_keys(FOLDER) == [f"{FOLDER}/metrics.json"]


def test_deleting_a_key_with_no_object_is_not_an_error(storage: StorageClient) -> None:
    storage.delete(f"{FOLDER}/never-stored.bin")
    put(storage, f"{FOLDER}/model.bin")
    storage.delete(f"{FOLDER}/model.bin")
    storage.delete(f"{FOLDER}/model.bin")
    assert storage.list_keys(FOLDER) == []


def test_a_folder_lists_every_key_beneath_it_sorted_and_nothing_beside_it(
    storage: StorageClient,
) -> None:
    put(
        storage,
        f"{FOLDER}/sha256.txt",
        f"{FOLDER}/model.bin",
        "models/BTCUSDT/20261124_020000Z/model.bin",
        "models/BTCUSDT/CHAMPION",
        "models/BTCUSDT2/20261123_020000Z/model.bin",  # a sibling sharing the prefix
        "runs/20261123Z/status.json",
    )

    assert storage.list_keys("models/BTCUSDT") == [
        "models/BTCUSDT/20261123_020000Z/model.bin",
        "models/BTCUSDT/20261123_020000Z/sha256.txt",
        "models/BTCUSDT/20261124_020000Z/model.bin",
        "models/BTCUSDT/CHAMPION",
    ]
    assert storage.list_keys(FOLDER) == [f"{FOLDER}/model.bin", f"{FOLDER}/sha256.txt"]


def test_a_folder_with_nothing_stored_lists_no_key(storage: StorageClient) -> None:
    assert storage.list_keys("models/NOSUCH") == []


@pytest.mark.parametrize("bad_key", BAD_KEYS)
def test_a_bad_key_is_refused_before_anything_is_deleted(
    storage: StorageClient, bad_key: str
) -> None:
    with pytest.raises(ValueError):
        storage.delete(bad_key)


def test_the_local_store_removes_the_folders_a_deletion_empties_but_not_its_root(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path / "mirror")
    put(storage, f"{FOLDER}/model.bin", "models/ETHUSDT/20261123_020000Z/model.bin")

    storage.delete(f"{FOLDER}/model.bin")

    assert not (tmp_path / "mirror" / "models" / "BTCUSDT").exists()
    assert (tmp_path / "mirror" / "models" / "ETHUSDT").is_dir()
    storage.delete("models/ETHUSDT/20261123_020000Z/model.bin")
    assert (tmp_path / "mirror").is_dir() and not (tmp_path / "mirror" / "models").exists()


def test_a_dropbox_folder_is_listed_across_pages(dropbox_server: DropboxTestServer) -> None:
    storage = dropbox_client(dropbox_server)
    keys = [f"{FOLDER}/file-{n:02d}.json" for n in range(7)]
    put(storage, *keys)
    dropbox_server.state.list_page_size = 3

    assert storage.list_keys(FOLDER) == keys
    assert len(dropbox_server.seen("2/files/list_folder/continue")) >= 2


def test_a_dropbox_deletion_the_server_refuses_names_the_key(
    dropbox_server: DropboxTestServer,
) -> None:
    storage = dropbox_client(dropbox_server)
    put(storage, f"{FOLDER}/model.bin")
    dropbox_server.fail_next("2/files/delete_v2", 500, times=10)

    with pytest.raises(UploadError) as raised:
        storage.delete(f"{FOLDER}/model.bin")

    assert raised.value.key == f"{FOLDER}/model.bin" and "delete of dropbox:" in str(raised.value)
    assert storage.exists(f"{FOLDER}/model.bin")
