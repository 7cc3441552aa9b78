"""The AWS Batch API as the night needs it: boto3, imported here only, every call retried
with jittered backoff while Batch throttles (a watching `status` must outlive a busy
account), and the errors a user can fix turned into one clear message (exit 2).

Credentials come only from boto3's standard chain, never from our config or flags.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from retrainer.base.config import BatchSettings
from retrainer.base.errors import BadInputError
from retrainer.base.optional import import_optional
from retrainer.engine.retry import backoff_s

THROTTLED = frozenset(
    {"TooManyRequestsException", "ThrottlingException", "Throttling", "RequestLimitExceeded"}
)
DESCRIBE_CHUNK = 100  # describe_jobs takes at most 100 ids a call
THROTTLE_TRIES = 8
THROTTLE_BASE_S = 0.5
THROTTLE_CAP_S = 20.0


class BatchApiError(Exception):
    """A Batch call failed for a reason that is not the user's input (the service, the
    network); the message names the call and carries no credential."""


class BatchClient:
    def __init__(
        self,
        settings: BatchSettings,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        boto3 = import_optional("boto3", "s3")
        config = import_optional("botocore.config", "s3").Config(
            region_name=settings.region,
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=10,
            read_timeout=60,
        )
        exceptions = import_optional("botocore.exceptions", "s3")
        self._client_error: type[Exception] = exceptions.ClientError
        self._no_credentials: type[Exception] = exceptions.NoCredentialsError
        self._no_region: type[Exception] = exceptions.NoRegionError
        self._botocore_error: type[Exception] = exceptions.BotoCoreError
        try:
            self._client: Any = boto3.session.Session().client(
                "batch", endpoint_url=settings.endpoint_url, config=config
            )
        except self._no_region:
            raise BadInputError(
                "no AWS region: set [batch] region or AWS_REGION / AWS_DEFAULT_REGION"
            ) from None
        self._sleep = sleep
        self._rng = rng or random.Random()

    # -- the calls -------------------------------------------------------------------
    def queue_exists(self, name: str) -> bool:
        found = self._call("describe_job_queues", jobQueues=[name])
        return any(q.get("state") != "DISABLED" for q in found.get("jobQueues", []))

    def definition_exists(self, name: str) -> bool:
        """name: a name (its latest active revision), name:revision, or an ARN."""
        if name.startswith("arn:") or ":" in name:
            found = self._call("describe_job_definitions", jobDefinitions=[name])
        else:
            found = self._call("describe_job_definitions", jobDefinitionName=name, status="ACTIVE")
        return any(d.get("status") == "ACTIVE" for d in found.get("jobDefinitions", []))

    def register_definition(self, request: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("register_job_definition", **request))

    def submit(self, request: dict[str, Any]) -> dict[str, Any]:
        return dict(self._call("submit_job", **request))

    def jobs_named(self, queue: str, name: str) -> list[dict[str, Any]]:
        """Every job of that name in the queue, whatever its state, newest first."""
        jobs = list(
            self._pages(
                "list_jobs", jobQueue=queue, filters=[{"name": "JOB_NAME", "values": [name]}]
            )
        )
        # list_jobs also lists an array job's children under the parent's name.
        parents = [j for j in jobs if ":" not in str(j.get("jobId", ""))]
        return sorted(parents, key=lambda j: int(j.get("createdAt") or 0), reverse=True)

    def describe(self, job_ids: list[str]) -> list[dict[str, Any]]:
        """describe_jobs in chunks of 100 ids."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(job_ids), DESCRIBE_CHUNK):
            chunk = job_ids[start : start + DESCRIBE_CHUNK]
            out += self._call("describe_jobs", jobs=chunk).get("jobs", [])
        return out

    def children(self, array_job_id: str) -> list[dict[str, Any]]:
        """The array job's children, every page (list_jobs' nextToken)."""
        return list(self._pages("list_jobs", arrayJobId=array_job_id))

    # -- retries and errors ----------------------------------------------------------
    def _pages(self, operation: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            page = self._call(operation, **kwargs, **({"nextToken": token} if token else {}))
            yield from page.get("jobSummaryList", [])
            token = page.get("nextToken")
            if not token:
                return

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        for tries in range(1, THROTTLE_TRIES + 1):
            try:
                response: dict[str, Any] = getattr(self._client, operation)(**kwargs)
                return response
            except self._client_error as exc:
                code = _error_code(exc)
                if code in THROTTLED and tries < THROTTLE_TRIES:
                    self._sleep(backoff_s(tries, THROTTLE_BASE_S, THROTTLE_CAP_S, self._rng))
                    continue
                raise self._explained(operation, exc) from None
            except self._no_credentials:
                raise BadInputError(
                    "no AWS credentials: the standard chain found none (environment, "
                    "profile, instance or task role)"
                ) from None
            except self._botocore_error as exc:
                raise BatchApiError(f"Batch {operation} failed: {type(exc).__name__}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _explained(self, operation: str, exc: Exception) -> Exception:
        code = _error_code(exc)
        message = getattr(exc, "response", {}).get("Error", {}).get("Message") or ""
        if code in ("ClientException", "InvalidParameterValue", "ValidationException"):
            return BadInputError(f"Batch refused {operation}: {message or code}")
        if code in (
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "AccessDenied",
            "AccessDeniedException",
            "ExpiredTokenException",
        ):
            return BadInputError(f"AWS credentials refused for Batch {operation}: {code}")
        return BatchApiError(f"Batch {operation} failed: {code} {message}".rstrip())


def _error_code(exc: Exception) -> str | None:
    error = getattr(exc, "response", {}).get("Error", {})
    code = error.get("Code")
    return str(code) if code else None
