"""A storage backend for S3 and S3-compatible stores (MinIO, Cloudflare R2, SeaweedFS).

Credentials come only from boto3's standard chain (environment, profile, instance role),
never from the config. Large files go up as multipart uploads with parallel parts
(boto3's transfer manager), small ones in one PUT. Every object carries the artifact's
SHA-256 twice: as object metadata (always) and as S3's additional checksum, which the
server checks against the bytes it received and reports back on HEAD. After an upload,
one HEAD confirms that the server's own checksum matches the local file, so nothing is
downloaded to verify. Transient errors (5xx, throttling, connection resets) are retried
by botocore's standard retry mode with backoff; a permanent one (403, no bucket) fails at
once with the bucket and key named and no secret.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrainer.base.config import StorageSettings
from retrainer.base.optional import import_optional
from retrainer.mirror.storage.protocol import (
    UploadError,
    UploadResult,
    json_bytes,
    validate_key,
)

SHA256_META = "sha256"  # x-amz-meta-sha256: the whole object's sha256, hex
MB = 1 << 20
# Error codes that no retry can fix: fail fast.
PERMANENT = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "AllAccessDisabled",
    "AccountProblem",
    "InvalidBucketName",
    "403",
    "400",
}


@dataclass(frozen=True)
class S3Options:
    bucket: str
    prefix: str = ""
    region: str | None = None
    endpoint_url: str | None = None
    addressing_style: str = "auto"
    multipart_threshold_bytes: int = 8 * MB
    chunk_bytes: int = 8 * MB
    max_concurrency: int = 4
    max_attempts: int = 5
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 60.0


class S3Storage:
    def __init__(self, options: S3Options) -> None:
        boto3 = import_optional("boto3", "s3")
        botocore_config = import_optional("botocore.config", "s3")
        transfer = import_optional("boto3.s3.transfer", "s3")
        self.options = options
        self.bucket = options.bucket
        self.prefix = options.prefix.strip("/")
        config = botocore_config.Config(
            region_name=options.region,
            retries={"mode": "standard", "max_attempts": options.max_attempts},
            s3={"addressing_style": options.addressing_style},
            connect_timeout=options.connect_timeout_s,
            read_timeout=options.read_timeout_s,
            max_pool_connections=max(10, options.max_concurrency * 2),
            # The SHA-256 checksum is asked for explicitly below; no CRC on top of it.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        # The standard chain only: no key ever comes from our config or flags.
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=options.endpoint_url, config=config
        )
        self._transfer_config = transfer.TransferConfig(
            multipart_threshold=options.multipart_threshold_bytes,
            multipart_chunksize=options.chunk_bytes,
            max_concurrency=options.max_concurrency,
            use_threads=options.max_concurrency > 1,
        )
        self._client_error: type[Exception] = import_optional(
            "botocore.exceptions", "s3"
        ).ClientError
        self._botocore_error: type[Exception] = import_optional(
            "botocore.exceptions", "s3"
        ).BotoCoreError
        self._transfer_failed: type[Exception] = import_optional(
            "boto3.exceptions", "s3"
        ).S3UploadFailedError

    @classmethod
    def from_settings(cls, settings: StorageSettings) -> S3Storage:
        if settings.bucket is None:
            from retrainer.base.errors import BadInputError

            raise BadInputError('storage.bucket is required when storage.kind = "s3"')
        return cls(
            S3Options(
                bucket=settings.bucket,
                prefix=settings.prefix,
                region=settings.region,
                endpoint_url=settings.endpoint_url,
                addressing_style=settings.addressing_style,
                multipart_threshold_bytes=int(settings.multipart_threshold_mb * MB),
                chunk_bytes=int(settings.chunk_mb * MB),
                max_concurrency=settings.max_concurrency,
                max_attempts=settings.max_attempts,
            )
        )

    # -- the Protocol ------------------------------------------------------------
    def describe(self) -> str:
        where = f" at {self.options.endpoint_url}" if self.options.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._object_key(key)}"

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def checksum(self, key: str) -> str | None:
        """The object's sha256 from one HEAD: the server's own SHA-256 checksum when the
        object was put whole, else the sha256 metadata recorded with it."""
        head = self._head(key)
        return None if head is None else _remote_sha256(head)

    def put_file(self, local_path: Path, key: str) -> UploadResult:
        started = time.monotonic()
        object_key = self._object_key(key)
        try:
            size = local_path.stat().st_size
            digests = _local_digests(local_path, self._part_size(size), self._is_multipart(size))
        except OSError as exc:
            raise UploadError(
                key, f"cannot read {local_path.name}: {exc.strerror or type(exc).__name__}"
            ) from exc
        if self._already_there(key, digests.sha256):
            return self._result(key, size, digests.sha256, started, skipped=True)
        extra = {"Metadata": {SHA256_META: digests.sha256}, "ChecksumAlgorithm": "SHA256"}
        try:
            self._client.upload_file(
                str(local_path),
                self.bucket,
                object_key,
                ExtraArgs=extra,
                Config=self._transfer_config,
            )
        except (self._client_error, self._botocore_error, self._transfer_failed, OSError) as exc:
            raise UploadError(key, self._reason("upload", key, exc)) from None
        self._confirm(key, size, digests)
        return self._result(key, size, digests.sha256, started, skipped=False)

    def get_file(self, key: str, local_path: Path) -> None:
        partial = local_path.with_name(f".{local_path.name}.download")
        try:
            self._client.download_file(
                self.bucket, self._object_key(key), str(partial), Config=self._transfer_config
            )
            partial.replace(local_path)
        except (self._client_error, self._botocore_error, self._transfer_failed, OSError) as exc:
            partial.unlink(missing_ok=True)
            raise UploadError(key, self._reason("download", key, exc)) from None

    def put_json(self, obj: Any, key: str) -> UploadResult:
        started = time.monotonic()
        object_key = self._object_key(key)
        data = json_bytes(obj, key)
        digest = hashlib.sha256(data)
        if self._already_there(key, digest.hexdigest()):
            return self._result(key, len(data), digest.hexdigest(), started, skipped=True)
        try:
            self._client.put_object(
                Bucket=self.bucket,
                Key=object_key,
                Body=data,
                ContentType="application/json",
                Metadata={SHA256_META: digest.hexdigest()},
                ChecksumSHA256=base64.b64encode(digest.digest()).decode("ascii"),
            )
        except (self._client_error, self._botocore_error) as exc:
            raise UploadError(key, self._reason("upload", key, exc)) from None
        self._confirm(key, len(data), _Digests(digest.hexdigest(), _b64(digest.digest())))
        return self._result(key, len(data), digest.hexdigest(), started, skipped=False)

    def delete(self, key: str) -> None:
        # S3 answers 204 for a key that has no object: deleting twice is not an error.
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self._object_key(key))
        except (self._client_error, self._botocore_error) as exc:
            raise UploadError(key, self._reason("delete", key, exc)) from None

    def list_keys(self, folder: str) -> list[str]:
        """ListObjectsV2 under the folder's prefix, a page (1,000 keys) at a time."""
        start = f"{self._object_key(folder)}/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        keys: list[str] = []
        try:
            pages = self._client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            )
            for page in pages:
                keys += [str(item["Key"])[strip:] for item in page.get("Contents", ())]
        except (self._client_error, self._botocore_error) as exc:
            raise UploadError(folder, self._reason("list", folder, exc)) from None
        return sorted(keys)

    # -- helpers -------------------------------------------------------------------
    def _object_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _head(self, key: str) -> dict[str, Any] | None:
        object_key = self._object_key(key)
        try:
            head: dict[str, Any] = self._client.head_object(
                Bucket=self.bucket, Key=object_key, ChecksumMode="ENABLED"
            )
        except self._client_error as exc:
            code = _error_code(exc)
            if code in ("404", "NoSuchKey", "NotFound"):
                return None
            raise UploadError(key, self._reason("HEAD", key, exc)) from None
        except self._botocore_error as exc:
            raise UploadError(key, self._reason("HEAD", key, exc)) from None
        return head

    def _already_there(self, key: str, sha256: str) -> bool:
        head = self._head(key)
        return head is not None and _remote_sha256(head) == sha256

    def _confirm(self, key: str, size: int, digests: _Digests) -> None:
        """One HEAD: the size, the recorded sha256 and the server's own checksum agree."""
        head = self._head(key)
        if head is None:
            raise UploadError(key, f"{self.uri(key)} is missing right after its upload")
        problems = []
        if int(head.get("ContentLength", -1)) != size:
            problems.append(f"size {head.get('ContentLength')} != {size}")
        if head.get("Metadata", {}).get(SHA256_META) != digests.sha256:
            problems.append("sha256 metadata differs")
        server = head.get("ChecksumSHA256")
        if server is not None and server != digests.server_checksum:
            problems.append("the server's SHA-256 checksum differs from the local file's")
        if problems:
            raise UploadError(key, f"{self.uri(key)} does not verify: " + "; ".join(problems))

    def _is_multipart(self, size: int) -> bool:
        return size >= self.options.multipart_threshold_bytes

    def _part_size(self, size: int) -> int:
        adjuster = import_optional("s3transfer.utils", "s3").ChunksizeAdjuster()
        return int(adjuster.adjust_chunksize(self.options.chunk_bytes, size))

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
        """What failed, where, and why, in words that carry no credential."""
        where = f"s3://{self.bucket}/{self._object_key(key)}"
        inner = exc.__cause__ or exc.__context__
        if _error_code(exc) is None and isinstance(inner, Exception) and _error_code(inner):
            exc = inner  # the transfer manager wraps the ClientError
        code = _error_code(exc)
        if code is not None:
            message = getattr(exc, "response", {}).get("Error", {}).get("Message") or ""
            hint = " (permanent: not retried)" if code in PERMANENT else ""
            status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
            named = code if code != str(status) else ""
            detail = " ".join(part for part in (named, message) if part)
            return f"{operation} of {where} failed: HTTP {status} {detail}{hint}"
        cause = exc.__cause__ or exc.__context__
        because = f" ({type(cause).__name__})" if cause is not None else ""
        return f"{operation} of {where} failed: {type(exc).__name__}{because}: {_first_line(exc)}"


@dataclass(frozen=True)
class _Digests:
    sha256: str  # hex, of the whole file
    server_checksum: str  # what S3 reports as ChecksumSHA256: whole, or composite "...-N"


def _local_digests(path: Path, part_size: int, multipart: bool) -> _Digests:
    """The file's sha256 and the SHA-256 checksum S3 will compute for it, in one read."""
    whole = hashlib.sha256()
    parts: list[bytes] = []
    with path.open("rb") as handle:
        while chunk := handle.read(part_size):
            whole.update(chunk)
            parts.append(hashlib.sha256(chunk).digest())
    if not multipart:
        return _Digests(whole.hexdigest(), _b64(whole.digest()))
    composite = hashlib.sha256(b"".join(parts)).digest()
    return _Digests(whole.hexdigest(), f"{_b64(composite)}-{len(parts)}")


def _remote_sha256(head: dict[str, Any]) -> str | None:
    server = head.get("ChecksumSHA256")
    if isinstance(server, str) and "-" not in server:
        return base64.b64decode(server).hex()  # computed by the server from the bytes
    recorded = head.get("Metadata", {}).get(SHA256_META)
    return recorded if isinstance(recorded, str) else None


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _error_code(exc: Exception) -> str | None:
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    code = response.get("Error", {}).get("Code")
    return str(code) if code is not None else None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
