"""What we ask of Batch: the job definition, the array job's submission, and the retry
strategy's rules, with `evaluate_on_exit`, the rules as Batch reads them (our tests'
stand-in for Batch, which moto does not emulate).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from retrainer.base.config import BatchSettings
from retrainer.base.errors import BadInputError
from retrainer.job.batch.batchplan import BatchPlan, root_id
from retrainer.job.batch.exits import EXIT_FOR_GOOD, EXIT_RETRY

DEFAULT_DEFINITION = "retrainer"
# Batch allows 1 to 10 attempts.
MAX_ATTEMPTS = 10
# The child fetches data before its attempt and uploads the folder after it: Batch's own
# timeout, a backstop behind the supervisor's deadline, leaves time for both.
TRANSFER_MARGIN_S = 300
MIN_TIMEOUT_S = 60  # Batch's smallest attemptDurationSeconds
# Batch retries an attempt that no rule matches; the last rule matches every end.
RETRY_RULES: tuple[dict[str, str], ...] = (
    {"onExitCode": str(EXIT_RETRY), "action": "RETRY"},  # a crash, a timeout, the cap
    # The instance went away under the child (spot reclaimed, scaled in).
    {"onStatusReason": "Host EC2*", "action": "RETRY"},
    {"onExitCode": "137", "action": "RETRY"},  # SIGKILLed: a spot or Fargate stop
    {"onExitCode": str(EXIT_FOR_GOOD), "action": "EXIT"},  # bad data, a bad plan
    {"onReason": "*", "action": "EXIT"},  # anything else: as it ended
)

Action = Literal["RETRY", "EXIT"]


def retry_strategy(retries: int) -> dict[str, Any]:
    return {"attempts": min(MAX_ATTEMPTS, retries + 1), "evaluateOnExit": list(RETRY_RULES)}


def attempt_timeout_s(timeout_s: float, kill_grace_s: float) -> int:
    return max(MIN_TIMEOUT_S, math.ceil(timeout_s + kill_grace_s + TRANSFER_MARGIN_S))


def child_command(plan: BatchPlan) -> list[str]:
    """The container's arguments after its entrypoint (`retrainer`)."""
    command = ["batch", "child", "--plan", plan.uri()]
    if plan.location.endpoint_url:
        command += ["--endpoint_url", plan.location.endpoint_url]
    if plan.location.addressing_style != "auto":
        command += ["--addressing_style", plan.location.addressing_style]
    if plan.location.region:
        command += ["--region", plan.location.region]
    return command


def resource_requirements(batch: BatchSettings) -> list[dict[str, str]]:
    out = [
        {"type": "VCPU", "value": _number(batch.vcpus)},
        {"type": "MEMORY", "value": str(batch.memory_mb)},
    ]
    if batch.gpus:
        out.append({"type": "GPU", "value": str(batch.gpus)})
    return out


def tags(batch: BatchSettings, plan: BatchPlan) -> dict[str, str]:
    return {
        **batch.tags,
        "retrainer:day": plan.day,
        "retrainer:root": root_id(plan.root)[:16],
        "retrainer:plan": plan.folder,  # how a second submit attaches: the folder it reads
    }


def submit_request(batch: BatchSettings, plan: BatchPlan) -> dict[str, Any]:
    """One array job, one child per item (a night of one item: a plain job)."""
    if batch.job_queue is None or batch.job_definition is None:
        raise BadInputError("[batch] job_queue and job_definition are required to submit")
    request: dict[str, Any] = {
        "jobName": plan.job_name,
        "jobQueue": batch.job_queue,
        "jobDefinition": batch.job_definition,
        "retryStrategy": retry_strategy(plan.retries),
        "timeout": {"attemptDurationSeconds": attempt_timeout_s(plan.timeout_s, plan.kill_grace_s)},
        "containerOverrides": {
            "command": child_command(plan),
            "environment": _environment(batch.environment),
            "resourceRequirements": resource_requirements(batch),
        },
        "tags": tags(batch, plan),
        "propagateTags": True,
    }
    if len(plan.items) > 1:
        request["arrayProperties"] = {"size": len(plan.items)}
    return request


def definition_request(batch: BatchSettings) -> dict[str, Any]:
    """`retrainer batch definition`: a container job definition from [batch]."""
    if batch.image is None:
        raise BadInputError("[batch] image is required for a job definition")
    if batch.gpus and batch.platform == "FARGATE":
        raise BadInputError('[batch] gpus needs platform = "EC2": Fargate has no GPUs')
    container: dict[str, Any] = {
        "image": batch.image,
        "command": ["batch", "child"],
        "resourceRequirements": resource_requirements(batch),
        "environment": _environment(batch.environment),
    }
    if batch.job_role_arn:
        container["jobRoleArn"] = batch.job_role_arn
    if batch.execution_role_arn:
        container["executionRoleArn"] = batch.execution_role_arn
    if batch.platform == "FARGATE":
        container["fargatePlatformConfiguration"] = {"platformVersion": "LATEST"}
        # A public IP to pull the image and reach S3 from a public subnet without a NAT.
        container["networkConfiguration"] = {"assignPublicIp": "ENABLED"}
    return {
        "jobDefinitionName": (batch.job_definition or DEFAULT_DEFINITION).split(":")[0],
        "type": "container",
        "platformCapabilities": [batch.platform],
        "containerProperties": container,
        "propagateTags": True,
        "tags": dict(batch.tags),
    }


def evaluate_on_exit(
    rules: Sequence[Mapping[str, str]],
    exit_code: int | None,
    status_reason: str = "",
    reason: str = "",
) -> Action:
    """What Batch does with an attempt that ended: the first rule whose every condition
    matches; none matching: RETRY (Batch's default while attempts remain)."""
    for rule in rules:
        conditions = {
            "onExitCode": "" if exit_code is None else str(exit_code),
            "onStatusReason": status_reason,
            "onReason": reason,
        }
        if all(_glob(rule[key], value) for key, value in conditions.items() if key in rule):
            return "EXIT" if rule["action"].upper() == "EXIT" else "RETRY"
    return "RETRY"


def _glob(pattern: str, value: str) -> bool:
    """Batch's patterns: exact, or a prefix ending in one `*`."""
    if pattern.endswith("*"):
        return value.startswith(pattern[:-1])
    return value == pattern


def _environment(environment: Mapping[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in sorted(environment.items())]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)
