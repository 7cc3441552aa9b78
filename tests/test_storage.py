"""Storage: one contract every backend passes, then what is particular to each one.

`TestStorageContract` runs once per backend (local folder, S3 against a real SeaweedFS,
Dropbox through the real SDK against our wire-format server). A backend provides four
things: `storage` (a fresh, empty client), `read_back` (the bytes stored at a key),
`unwritable` (a client and a key it cannot write) and `break_next_write` (makes the
next upload die after sending half of the object).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pytest

from bench.seaweed import SeaweedServer
from retrainer.base.artifacts import sha256_bytes, sha256_file
from retrainer.base.config import StorageSettings
from retrainer.base.errors import BadInputError
from retrainer.mirror.storage import (
    MissingExtraError,
    StorageClient,
    UploadError,
    UploadResult,
    import_optional,
    make_storage,
    validate_key,
)
from retrainer.mirror.storage import local as local_backend_module
from retrainer.mirror.storage.local import LocalStorage
from tests.support.dropbox_server import DropboxTestServer
from tests.support.storage_fixtures import dropbox_client, new_bucket, raw_s3, s3_client
from tests.support.tcp_proxy import CuttingProxy

KEY = "models/BTCUSDT/20261123_020000Z/model.bin"
BAD_KEYS = [
    "",
    "/models/a.bin",
    "models/../a.bin",
    "../a.bin",
    "models//a.bin",
    "models/a.bin/",
    "./a.bin",
    "models\\a.bin",
]

ReadBack = Callable[[str], bytes]
Unwritable = tuple[StorageClient, str]


def make_file(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


@dataclass
class Backend:
    storage: StorageClient
    read_back: ReadBack
    unwritable: Callable[[], Unwritable]
    break_next_write: Callable[[], None]


def local_backend(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Backend:
    root = tmp_path / "mirror"

    def unwritable() -> Unwritable:
        # Tests run as root, so a read-only folder would not stop us: a file in the way does.
        root.mkdir(parents=True, exist_ok=True)
        (root / "models").write_bytes(b"a regular file where a folder should be")
        return LocalStorage(root), "models/BTCUSDT/model.bin"

    return Backend(
        LocalStorage(root),
        lambda key: (root / key).read_bytes(),
        unwritable,
        lambda: monkeypatch.setattr(local_backend_module, "_copy_from", _write_half_then_fail),
    )


def s3_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Backend:
    seaweed: SeaweedServer = request.getfixturevalue("seaweed")
    request.getfixturevalue("aws_env")
    bucket = new_bucket(seaweed)
    proxy = CuttingProxy(seaweed.ports["s3.port"]).start()
    request.addfinalizer(proxy.stop)
    raw = raw_s3(seaweed)

    def read_back(key: str) -> bytes:
        return bytes(raw.get_object(Bucket=bucket, Key=f"nightly/{key}")["Body"].read())

    def unwritable() -> Unwritable:
        # Credentials that may read but not write: a permanent 403 on every upload.
        with monkeypatch.context() as patched:
            for name, value in seaweed.readonly_env.items():
                patched.setenv(name, value)
            return s3_client(seaweed.endpoint_url, bucket), KEY

    return Backend(
        s3_client(proxy.url, bucket), read_back, unwritable, lambda: proxy.cut_uploads_after(50_000)
    )


def dropbox_backend(request: pytest.FixtureRequest) -> Backend:
    server: DropboxTestServer = request.getfixturevalue("dropbox_server")
    storage = dropbox_client(server)

    def unwritable() -> Unwritable:
        # A file where a folder should be: Dropbox answers 409 path/conflict.
        storage.put_json({"a": 1}, "models")
        return storage, "models/BTCUSDT/model.bin"

    def break_next_write() -> None:
        server.cut_next("2/files/upload", times=5)

    return Backend(
        storage, lambda key: server.read(f"/nightly/{key}"), unwritable, break_next_write
    )


class TestStorageContract:
    """The behaviour every storage backend must have."""

    @pytest.fixture(params=["local", "s3", "dropbox"])
    def backend(
        self, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> Backend:
        if request.param == "local":
            return local_backend(tmp_path, monkeypatch)
        if request.param == "s3":
            return s3_backend(request, monkeypatch)
        return dropbox_backend(request)

    @pytest.fixture
    def storage(self, backend: Backend) -> StorageClient:
        return backend.storage

    @pytest.fixture
    def read_back(self, backend: Backend) -> ReadBack:
        return backend.read_back

    @pytest.fixture
    def unwritable(self, backend: Backend) -> Unwritable:
        return backend.unwritable()

    @pytest.fixture
    def break_next_write(self, backend: Backend) -> Callable[[], None]:
        return backend.break_next_write

    def test_is_a_storage_client(self, storage: StorageClient) -> None:
        assert isinstance(storage, StorageClient)

    def test_a_stored_file_exists_under_its_key_with_the_source_sha256(
        self, storage: StorageClient, read_back: ReadBack, tmp_path: Path
    ) -> None:
        source = make_file(tmp_path, "model.bin", b"weights" * 1000)

        result = storage.put_file(source, KEY)

        assert storage.exists(KEY)
        assert storage.checksum(KEY) == sha256_file(source) == result.sha256
        assert read_back(KEY) == source.read_bytes()
        assert (result.key, result.bytes, result.skipped) == (KEY, 7000, False)
        assert result.uri == storage.uri(KEY)
        assert result.seconds >= 0

    def test_a_stored_file_comes_back_whole_by_get_file(
        self, storage: StorageClient, tmp_path: Path
    ) -> None:
        source = make_file(tmp_path, "attempt.tar", bytes(range(256)) * 4000)
        storage.put_file(source, KEY)
        fetched = tmp_path / "fetched" / "attempt.tar"
        fetched.parent.mkdir()
        storage.get_file(KEY, fetched)
        assert fetched.read_bytes() == source.read_bytes()
        assert [p.name for p in fetched.parent.iterdir()] == ["attempt.tar"]

    def test_getting_a_missing_key_gives_an_upload_error_naming_it(
        self, storage: StorageClient, tmp_path: Path
    ) -> None:
        with pytest.raises(UploadError) as caught:
            storage.get_file("models/NOPE/x.bin", tmp_path / "x.bin")
        assert caught.value.key == "models/NOPE/x.bin"
        assert not (tmp_path / "x.bin").exists()

    def test_a_missing_key_does_not_exist_and_has_no_checksum(self, storage: StorageClient) -> None:
        assert not storage.exists(KEY)
        assert storage.checksum(KEY) is None

    def test_put_json_stores_the_object_as_json(
        self, storage: StorageClient, read_back: ReadBack
    ) -> None:
        result = storage.put_json({"sharpe": 1.5, "symbol": "BTCUSDT"}, "summary/x.json")

        stored = read_back("summary/x.json")
        assert json.loads(stored) == {"sharpe": 1.5, "symbol": "BTCUSDT"}
        assert result.sha256 == sha256_bytes(stored) == storage.checksum("summary/x.json")

    def test_put_json_of_a_non_json_value_gives_an_upload_error(
        self, storage: StorageClient
    ) -> None:
        with pytest.raises(UploadError) as caught:
            storage.put_json({"loss": float("nan")}, "metrics.json")
        assert caught.value.key == "metrics.json"
        assert not storage.exists("metrics.json")

    def test_putting_the_same_content_again_is_skipped(
        self, storage: StorageClient, tmp_path: Path
    ) -> None:
        source = make_file(tmp_path, "model.bin", b"same")
        storage.put_file(source, KEY)

        again = storage.put_file(source, KEY)

        assert again.skipped
        assert again.sha256 == sha256_file(source)

    def test_changed_content_is_uploaded_again(
        self, storage: StorageClient, read_back: ReadBack, tmp_path: Path
    ) -> None:
        storage.put_file(make_file(tmp_path, "old.bin", b"old"), KEY)

        result = storage.put_file(make_file(tmp_path, "new.bin", b"new content"), KEY)

        assert not result.skipped
        assert read_back(KEY) == b"new content"
        assert storage.checksum(KEY) == sha256_bytes(b"new content")

    @pytest.mark.parametrize("bad_key", BAD_KEYS)
    def test_a_key_that_is_not_a_relative_posix_path_is_rejected(
        self, storage: StorageClient, tmp_path: Path, bad_key: str
    ) -> None:
        source = make_file(tmp_path, "model.bin", b"x")
        with pytest.raises(ValueError):
            storage.put_file(source, bad_key)
        with pytest.raises(ValueError):
            storage.exists(bad_key)

    def test_an_unwritable_target_gives_an_upload_error_naming_the_key(
        self, unwritable: Unwritable, tmp_path: Path
    ) -> None:
        storage, unwritable_key = unwritable
        source = make_file(tmp_path, "model.bin", b"x")

        with pytest.raises(UploadError) as caught:
            storage.put_file(source, unwritable_key)

        assert caught.value.key == unwritable_key
        assert unwritable_key in str(caught.value)
        assert caught.value.reason

    def test_a_missing_source_file_gives_an_upload_error(
        self, storage: StorageClient, tmp_path: Path
    ) -> None:
        with pytest.raises(UploadError) as caught:
            storage.put_file(tmp_path / "absent.bin", KEY)
        assert caught.value.key == KEY
        assert not storage.exists(KEY)

    def test_an_upload_that_dies_halfway_leaves_no_object_at_the_key(
        self, storage: StorageClient, break_next_write: Callable[[], None], tmp_path: Path
    ) -> None:
        source = make_file(tmp_path, "model.bin", os.urandom(100_000))
        break_next_write()

        with pytest.raises(UploadError):
            storage.put_file(source, KEY)

        assert not storage.exists(KEY)
        assert storage.checksum(KEY) is None

    def test_an_upload_that_dies_halfway_leaves_the_previous_object_intact(
        self,
        storage: StorageClient,
        read_back: ReadBack,
        break_next_write: Callable[[], None],
        tmp_path: Path,
    ) -> None:
        storage.put_file(make_file(tmp_path, "old.bin", b"old"), KEY)
        break_next_write()

        with pytest.raises(UploadError):
            storage.put_file(make_file(tmp_path, "new.bin", os.urandom(100_000)), KEY)

        assert read_back(KEY) == b"old"
        assert storage.checksum(KEY) == sha256_bytes(b"old")


def _write_half_then_fail(source: Path) -> Callable[[IO[bytes]], None]:
    def write(out: IO[bytes]) -> None:
        data = source.read_bytes()
        out.write(data[: len(data) // 2])
        raise OSError(errno.EIO, "Input/output error")

    return write


class TestLocalStorage:
    @pytest.fixture
    def root(self, tmp_path: Path) -> Path:
        return tmp_path / "mirror"

    @pytest.fixture
    def storage(self, root: Path) -> LocalStorage:
        return LocalStorage(root)

    @pytest.fixture
    def break_next_write(self, monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
        return lambda: monkeypatch.setattr(
            local_backend_module, "_copy_from", _write_half_then_fail
        )

    def test_describe_and_uri_name_the_folder(self, storage: LocalStorage, root: Path) -> None:
        assert storage.describe() == f"local:{root}"
        assert storage.uri("a/b.json") == (root / "a" / "b.json").as_uri()

    def test_a_failed_upload_leaves_no_temp_file_behind(
        self,
        storage: LocalStorage,
        root: Path,
        tmp_path: Path,
        break_next_write: Callable[[], None],
    ) -> None:
        break_next_write()
        with pytest.raises(UploadError):
            storage.put_file(make_file(tmp_path, "m.bin", b"x" * 1000), KEY)
        assert list((root / KEY).parent.iterdir()) == []

    def test_a_copy_that_differs_from_its_source_is_not_stored(
        self, storage: LocalStorage, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def write_other_bytes(source: Path) -> Callable[[IO[bytes]], None]:
            def write(out: IO[bytes]) -> None:
                out.write(b"not the source")

            return write

        monkeypatch.setattr(local_backend_module, "_copy_from", write_other_bytes)

        with pytest.raises(UploadError, match="sha256 differs"):
            storage.put_file(make_file(tmp_path, "m.bin", b"the source"), KEY)
        assert not storage.exists(KEY)

    def test_a_stored_object_changed_behind_our_back_is_hashed_again(
        self, storage: LocalStorage, root: Path, tmp_path: Path
    ) -> None:
        storage.put_file(make_file(tmp_path, "m.bin", b"one"), KEY)
        (root / KEY).write_bytes(b"tampered")

        assert storage.checksum(KEY) == sha256_bytes(b"tampered")
        assert not storage.put_file(tmp_path / "m.bin", KEY).skipped

    def test_a_process_killed_mid_upload_leaves_the_previous_object_intact(
        self, storage: LocalStorage, root: Path, tmp_path: Path
    ) -> None:
        storage.put_file(make_file(tmp_path, "old.bin", b"old"), KEY)
        new = make_file(tmp_path, "new.bin", os.urandom(1_000_000))
        script = textwrap.dedent(f"""
            import os, signal
            from pathlib import Path
            from retrainer.mirror.storage import local

            def write_half_then_die(source):
                def write(out):
                    out.write(source.read_bytes()[:500_000])
                    out.flush()
                    os.fsync(out.fileno())
                    os.kill(os.getpid(), signal.SIGKILL)
                return write

            local._copy_from = write_half_then_die
            local.LocalStorage(Path({str(root)!r})).put_file(Path({str(new)!r}), {KEY!r})
        """)

        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)

        assert proc.returncode == -9, proc.stderr.decode()
        assert (root / KEY).read_bytes() == b"old"
        assert LocalStorage(root).checksum(KEY) == sha256_bytes(b"old")
        assert not LocalStorage(root).put_file(new, KEY).skipped
        assert LocalStorage(root).checksum(KEY) == sha256_file(new)

    @pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
    def test_stored_objects_get_the_mode_the_umask_gives(
        self, storage: LocalStorage, root: Path, tmp_path: Path, umask: int, mode: int
    ) -> None:
        previous = os.umask(umask)
        try:
            storage.put_file(make_file(tmp_path, "m.bin", b"x"), KEY)
        finally:
            os.umask(previous)
        assert (root / KEY).stat().st_mode & 0o777 == mode


class TestRegistry:
    def test_storage_kind_none_means_no_client(self) -> None:
        assert make_storage(StorageSettings(kind="none")) is None

    def test_storage_kind_local_gives_a_local_client_on_the_configured_folder(
        self, tmp_path: Path
    ) -> None:
        client = make_storage(StorageSettings(kind="local", path=tmp_path))
        assert isinstance(client, LocalStorage)
        assert isinstance(client, StorageClient)
        assert client.describe() == f"local:{tmp_path}"

    def test_local_storage_without_a_path_is_bad_input(self) -> None:
        with pytest.raises(BadInputError, match="storage.path"):
            make_storage(StorageSettings(kind="local"))

    def test_an_unknown_kind_is_bad_input_naming_the_known_kinds(self) -> None:
        settings = StorageSettings.model_construct(kind="ftp", path=None)
        with pytest.raises(BadInputError, match="local"):
            make_storage(settings)

    def test_a_missing_optional_sdk_names_the_pip_extra(self) -> None:
        with pytest.raises(MissingExtraError) as caught:
            import_optional("retrainer_no_such_sdk", "s3")
        assert "pip install 'retrainer[s3]'" in str(caught.value)
        assert isinstance(caught.value, BadInputError)


class TestRecords:
    def test_an_upload_result_survives_to_dict_and_back(self) -> None:
        result = UploadResult(
            key=KEY, uri="file:///m", bytes=3, sha256="ab" * 32, seconds=0.5, skipped=True
        )
        assert UploadResult.from_dict(result.to_dict()) == result

    def test_an_upload_error_survives_pickling_with_its_key_and_reason(self) -> None:
        error = pickle.loads(pickle.dumps(UploadError(KEY, "No space left on device")))
        assert (error.key, error.reason) == (KEY, "No space left on device")
        assert str(error) == f"storage of {KEY!r} failed: No space left on device"

    @pytest.mark.parametrize("good_key", [KEY, "a", "summary/20261123Z/engine_summary.json"])
    def test_relative_posix_keys_are_accepted(self, good_key: str) -> None:
        assert validate_key(good_key) == good_key

    @pytest.mark.parametrize("bad_key", BAD_KEYS)
    def test_other_keys_are_rejected(self, bad_key: str) -> None:
        with pytest.raises(ValueError):
            validate_key(bad_key)
