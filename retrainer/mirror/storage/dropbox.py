"""A storage backend for Dropbox, through the official `dropbox` SDK.

Auth is a long-lived refresh token with the app key (and secret), so a nightly run never
breaks on an expired short-lived access token: the SDK fetches a fresh one when needed.
They come from the environment (DROPBOX_REFRESH_TOKEN, DROPBOX_APP_KEY,
DROPBOX_APP_SECRET) or a secrets file (`storage.secrets_file`, TOML with refresh_token,
app_key, app_secret), never from flags, and no message of ours ever carries them.

Files up to `session_threshold_bytes` go up in one call, bigger ones in an upload session
(start / append / finish) of `chunk_bytes` chunks, always in overwrite mode so that a rerun
replaces the old file. Integrity: Dropbox's `content_hash` of the stored file (from its
metadata) must equal the local one, computed with the SDK's own hasher (4 MiB blocks).
Rate limits (429 with Retry-After) and 5xx replies are retried by the SDK, which sleeps
for the server's Retry-After.

`endpoint_url` (for a proxy or a test server) sends every request that the SDK addresses
to api.dropboxapi.com or content.dropboxapi.com there instead, through the SDK's own
`session=` argument: a requests adapter that rewrites the URL.
"""

from __future__ import annotations

import hashlib
import os
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrainer.base.config import StorageSettings
from retrainer.base.errors import BadInputError
from retrainer.base.optional import import_optional
from retrainer.mirror.storage.protocol import (
    UploadError,
    UploadResult,
    json_bytes,
    validate_key,
)

MB = 1 << 20
DROPBOX_HOSTS = ("https://api.dropboxapi.com", "https://content.dropboxapi.com")
ENV_NAMES = {
    "refresh_token": "DROPBOX_REFRESH_TOKEN",
    "app_key": "DROPBOX_APP_KEY",
    "app_secret": "DROPBOX_APP_SECRET",
}


@dataclass(frozen=True)
class DropboxCredentials:
    refresh_token: str
    app_key: str
    app_secret: str | None = None

    def __repr__(self) -> str:  # never print a token, even in a traceback's locals
        return "DropboxCredentials(***)"

    @property
    def secrets(self) -> tuple[str, ...]:
        return tuple(s for s in (self.refresh_token, self.app_secret) if s)


def load_credentials(
    secrets_file: Path | None, environ: Mapping[str, str] | None = None
) -> DropboxCredentials:
    """From the environment first, then the secrets file; name what is missing, not values."""
    environ = os.environ if environ is None else environ
    values: dict[str, str] = {}
    if secrets_file is not None:
        try:
            parsed = tomllib.loads(secrets_file.read_text("utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise BadInputError(
                f"storage.secrets_file {secrets_file}: cannot be read as TOML "
                f"({type(exc).__name__})"
            ) from None
        values = {k: str(parsed[k]) for k in ENV_NAMES if parsed.get(k)}
    for field, env in ENV_NAMES.items():
        if environ.get(env):
            values[field] = environ[env]
    missing = [ENV_NAMES[f] for f in ("refresh_token", "app_key") if not values.get(f)]
    if missing:
        raise BadInputError(
            "Dropbox storage needs a refresh token and an app key: set "
            + " and ".join(missing)
            + " or storage.secrets_file"
        )
    return DropboxCredentials(values["refresh_token"], values["app_key"], values.get("app_secret"))


def redirected_session(endpoint_url: str) -> Any:
    """A requests.Session that sends the SDK's Dropbox URLs to endpoint_url instead."""
    requests = import_optional("requests", "dropbox")
    adapters = import_optional("requests.adapters", "dropbox")
    base = endpoint_url.rstrip("/")
    http_adapter: Any = adapters.HTTPAdapter

    class Redirect(http_adapter):  # type: ignore[misc]
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            for host in DROPBOX_HOSTS:
                if request.url.startswith(host + "/"):
                    request.url = base + request.url[len(host) :]
                    break
            return super().send(request, *args, **kwargs)

    session = requests.Session()
    for host in DROPBOX_HOSTS:
        session.mount(host + "/", Redirect(pool_maxsize=8))
    return session


@dataclass(frozen=True)
class DropboxOptions:
    prefix: str = ""
    session_threshold_bytes: int = 8 * MB
    chunk_bytes: int = 8 * MB
    max_retries_on_error: int = 4
    max_retries_on_rate_limit: int = 8
    timeout_s: float = 100.0
    endpoint_url: str | None = None


class DropboxStorage:
    def __init__(
        self, credentials: DropboxCredentials, options: DropboxOptions, session: Any = None
    ) -> None:
        self._sdk = import_optional("dropbox", "dropbox")
        self._files = import_optional("dropbox.files", "dropbox")
        self._exceptions = import_optional("dropbox.exceptions", "dropbox")
        self._hasher = import_optional("dropbox.content_hash", "dropbox").DropboxContentHasher
        self.options = options
        self.prefix = options.prefix.strip("/")
        if session is None and options.endpoint_url:
            session = redirected_session(options.endpoint_url)
        self._secrets = credentials.secrets
        self._client: Any = self._sdk.Dropbox(
            oauth2_refresh_token=credentials.refresh_token,
            app_key=credentials.app_key,
            app_secret=credentials.app_secret,
            session=session,
            max_retries_on_error=options.max_retries_on_error,
            max_retries_on_rate_limit=options.max_retries_on_rate_limit,
            timeout=options.timeout_s,
        )
        # content_hash → sha256 of objects this process stored or read: checksum() needs
        # no download for them.
        self._sha_by_content_hash: dict[str, str] = {}

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> DropboxStorage:
        return cls(
            load_credentials(settings.secrets_file),
            DropboxOptions(
                prefix=settings.prefix,
                session_threshold_bytes=int(settings.multipart_threshold_mb * MB),
                chunk_bytes=int(settings.chunk_mb * MB),
                max_retries_on_error=settings.max_attempts,
                max_retries_on_rate_limit=settings.max_attempts * 2,
                endpoint_url=settings.endpoint_url,
            ),
        )

    # -- the Protocol ------------------------------------------------------------
    def describe(self) -> str:
        where = f" at {self.options.endpoint_url}" if self.options.endpoint_url else ""
        return f"dropbox:/{self.prefix}{where}"

    def uri(self, key: str) -> str:
        return f"dropbox:{self._path(key)}"

    def exists(self, key: str) -> bool:
        return self._content_hash(key) is not None

    def checksum(self, key: str) -> str | None:
        """The stored file's sha256. Dropbox keeps no sha256, only its content_hash: known
        ones map back without a transfer; otherwise the file is downloaded and hashed."""
        remote = self._content_hash(key)
        if remote is None:
            return None
        if remote in self._sha_by_content_hash:
            return self._sha_by_content_hash[remote]
        try:
            _meta, response = self._client.files_download(self._path(key))
        except self._exceptions.ApiError as exc:
            if _is_not_found(exc):
                return None
            raise UploadError(key, self._reason("download", key, exc)) from None
        except (self._exceptions.DropboxException, OSError) as exc:
            raise UploadError(key, self._reason("download", key, exc)) from None
        sha, hasher = hashlib.sha256(), self._hasher()
        try:
            for chunk in response.iter_content(MB):
                sha.update(chunk)
                hasher.update(chunk)
        finally:
            response.close()
        if hasher.hexdigest() != remote:
            raise UploadError(
                key, f"{self.uri(key)}: downloaded bytes differ from its content_hash"
            )
        self._sha_by_content_hash[remote] = sha.hexdigest()
        return sha.hexdigest()

    def put_file(self, local_path: Path, key: str) -> UploadResult:
        started = time.monotonic()
        try:
            size = local_path.stat().st_size
            sha256, content_hash = self._local_hashes(local_path)
        except OSError as exc:
            raise UploadError(
                key, f"cannot read {local_path.name}: {exc.strerror or type(exc).__name__}"
            ) from exc
        if self._content_hash(key) == content_hash:
            self._sha_by_content_hash[content_hash] = sha256
            return self._result(key, size, sha256, started, skipped=True)
        try:
            with local_path.open("rb") as handle:
                if size <= self.options.session_threshold_bytes:
                    meta = self._client.files_upload(
                        handle.read(), self._path(key), mode=self._files.WriteMode.overwrite
                    )
                else:
                    meta = self._upload_session(handle, size, key)
        except OSError as exc:
            raise UploadError(
                key, f"cannot read {local_path.name}: {exc.strerror or type(exc).__name__}"
            ) from exc
        except (self._exceptions.DropboxException, self._requests_errors()) as exc:
            raise UploadError(key, self._reason("upload", key, exc)) from None
        self._confirm(key, meta, size, content_hash)
        self._sha_by_content_hash[content_hash] = sha256
        return self._result(key, size, sha256, started, skipped=False)

    def get_file(self, key: str, local_path: Path) -> None:
        partial = local_path.with_name(f".{local_path.name}.download")
        try:
            self._client.files_download_to_file(str(partial), self._path(key))
            partial.replace(local_path)
        except (self._exceptions.DropboxException, self._requests_errors(), OSError) as exc:
            partial.unlink(missing_ok=True)
            raise UploadError(key, self._reason("download", key, exc)) from None

    def put_json(self, obj: Any, key: str) -> UploadResult:
        started = time.monotonic()
        data = json_bytes(obj, key)
        hasher = self._hasher()
        hasher.update(data)
        content_hash, sha256 = hasher.hexdigest(), hashlib.sha256(data).hexdigest()
        if self._content_hash(key) == content_hash:
            return self._result(key, len(data), sha256, started, skipped=True)
        try:
            meta = self._client.files_upload(
                data, self._path(key), mode=self._files.WriteMode.overwrite
            )
        except (self._exceptions.DropboxException, self._requests_errors()) as exc:
            raise UploadError(key, self._reason("upload", key, exc)) from None
        self._confirm(key, meta, len(data), content_hash)
        self._sha_by_content_hash[content_hash] = sha256
        return self._result(key, len(data), sha256, started, skipped=False)

    def delete(self, key: str) -> None:
        """files/delete_v2; a path that is not there is already gone. Dropbox keeps the
        emptied folders (they hold no bytes, and list_keys lists files only)."""
        try:
            self._client.files_delete_v2(self._path(key))
        except self._exceptions.ApiError as exc:
            if _is_lookup_not_found(exc):
                return
            raise UploadError(key, self._reason("delete", key, exc)) from None
        except (self._exceptions.DropboxException, self._requests_errors()) as exc:
            raise UploadError(key, self._reason("delete", key, exc)) from None

    def list_keys(self, folder: str) -> list[str]:
        """files/list_folder (recursive) and its continue pages: the files, as keys."""
        start = self._path(folder)
        strip = len(f"/{self.prefix}/") if self.prefix else 1
        keys: list[str] = []
        try:
            page = self._client.files_list_folder(start, recursive=True)
            while True:
                keys += [
                    str(entry.path_display)[strip:]
                    for entry in page.entries
                    if isinstance(entry, self._files.FileMetadata)
                ]
                if not page.has_more:
                    break
                page = self._client.files_list_folder_continue(page.cursor)
        except self._exceptions.ApiError as exc:
            if _is_not_found(exc):
                return []
            raise UploadError(folder, self._reason("list_folder", folder, exc)) from None
        except (self._exceptions.DropboxException, self._requests_errors()) as exc:
            raise UploadError(folder, self._reason("list_folder", folder, exc)) from None
        return sorted(keys)

    # -- helpers -------------------------------------------------------------------
    def _path(self, key: str) -> str:
        validate_key(key)
        return f"/{self.prefix}/{key}" if self.prefix else f"/{key}"

    def _upload_session(self, handle: Any, size: int, key: str) -> Any:
        """start → append_v2 … → finish, `chunk_bytes` at a time, overwrite on commit."""
        chunk = self.options.chunk_bytes
        started = self._client.files_upload_session_start(handle.read(chunk))
        cursor = self._files.UploadSessionCursor(
            session_id=started.session_id, offset=handle.tell()
        )
        commit = self._files.CommitInfo(path=self._path(key), mode=self._files.WriteMode.overwrite)
        while size - handle.tell() > chunk:
            self._client.files_upload_session_append_v2(handle.read(chunk), cursor)
            cursor.offset = handle.tell()
        return self._client.files_upload_session_finish(handle.read(chunk), cursor, commit)

    def _content_hash(self, key: str) -> str | None:
        try:
            meta = self._client.files_get_metadata(self._path(key))
        except self._exceptions.ApiError as exc:
            if _is_not_found(exc):
                return None
            raise UploadError(key, self._reason("get_metadata", key, exc)) from None
        except (self._exceptions.DropboxException, self._requests_errors()) as exc:
            raise UploadError(key, self._reason("get_metadata", key, exc)) from None
        if not isinstance(meta, self._files.FileMetadata):
            return None  # a folder where a file should be
        return str(meta.content_hash) if meta.content_hash else None

    def _confirm(self, key: str, meta: Any, size: int, content_hash: str) -> None:
        """The upload's reply and a fresh metadata read both carry the local content_hash."""
        problems = []
        if int(getattr(meta, "size", -1)) != size:
            problems.append(f"size {getattr(meta, 'size', None)} != {size}")
        if getattr(meta, "content_hash", None) != content_hash:
            problems.append("the upload's content_hash differs from the local file's")
        elif self._content_hash(key) != content_hash:
            problems.append("the stored file's content_hash differs from the local file's")
        if problems:
            raise UploadError(key, f"{self.uri(key)} does not verify: " + "; ".join(problems))

    def _local_hashes(self, path: Path) -> tuple[str, str]:
        sha, hasher = hashlib.sha256(), self._hasher()
        with path.open("rb") as handle:
            while chunk := handle.read(4 * MB):
                sha.update(chunk)
                hasher.update(chunk)
        return sha.hexdigest(), str(hasher.hexdigest())

    def _requests_errors(self) -> type[Exception]:
        return import_optional("requests", "dropbox").RequestException  # type: ignore[no-any-return]

    def _result(
        self, key: str, size: int, sha256: str, started: float, skipped: bool
    ) -> UploadResult:
        return UploadResult(
            key=key,
            uri=self.uri(key),
            bytes=size,
            sha256=sha256,
            seconds=time.monotonic() - started,
            skipped=skipped,
        )

    def _reason(self, operation: str, key: str, exc: Exception) -> str:
        """The operation, the path and Dropbox's error summary; never a token."""
        summary = getattr(exc, "user_message_text", None) or _error_summary(exc)
        if isinstance(exc, self._exceptions.AuthError):
            summary += " (Dropbox refused the credentials: refresh token, app key, secret)"
        text = f"{operation} of {self.uri(key)} failed: {type(exc).__name__}: {summary}"
        for secret in self._secrets:
            if len(secret) >= 8:  # masking a one-letter "secret" would garble the text
                text = text.replace(secret, "***")
        return text


def _is_not_found(exc: Any) -> bool:
    error: Any = getattr(exc, "error", None)
    try:
        return bool(error.is_path() and error.get_path().is_not_found())
    except AttributeError:
        return False


def _is_lookup_not_found(exc: Any) -> bool:
    """delete_v2's spelling of not found: path_lookup/not_found."""
    error: Any = getattr(exc, "error", None)
    try:
        return bool(error.is_path_lookup() and error.get_path_lookup().is_not_found())
    except AttributeError:
        return False


def _error_summary(exc: Exception) -> str:
    for attr in ("error_summary", "error", "status_code"):
        value = getattr(exc, attr, None)
        if value:
            return str(value)[:300]
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
