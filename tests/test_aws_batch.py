"""A night on AWS Batch, on loopback: the Batch API from moto (no Docker), the bucket a
real SeaweedFS, every child a real `retrainer batch child` process; what moto does not
emulate (retries by evaluateOnExit, array children running) is played by the test with
our own reading of the rules (request.evaluate_on_exit)."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from typer.testing import CliRunner

from bench.seaweed import SeaweedServer
from retrainer.base.artifacts import Layout
from retrainer.base.clock import now_utc, run_day
from retrainer.base.config import BatchSettings, Settings, load_settings
from retrainer.base.errors import BadInputError
from retrainer.cli.app import app
from retrainer.job.batch.batchplan import BatchPlan
from retrainer.job.batch.client import BatchClient
from retrainer.job.batch.exits import EXIT_FOR_GOOD, EXIT_OK, EXIT_RETRY
from retrainer.job.batch.request import RETRY_RULES, evaluate_on_exit
from retrainer.job.batch.submit import submit_night
from retrainer.job.batch.watch import Seen, poll_delay_s, watch_night
from retrainer.ledger.journal import read_ledger
from retrainer.notify.credentials import WEBHOOK_URL_ENV
from tests.conftest import REPO, TINY_TRAINER, cli_env, read_json, write_config
from tests.support.http_server import RecordingServer
from tests.support.storage_fixtures import new_bucket, raw_s3

moto = pytest.importorskip("moto")

QUEUE, DEFINITION, REGION = "nightly-queue", "retrainer-child", "us-east-1"
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT"]


# -- the loopback account ----------------------------------------------------------------
@pytest.fixture
def batch_api(seaweed: SeaweedServer, aws_env: dict[str, str]) -> Iterator[None]:
    """moto's Batch in this process (jobs marked done at once, no Docker); every call to
    the SeaweedFS on loopback passes through to it, with its real credentials."""
    config: Any = {
        "batch": {"use_docker": False},
        "core": {"mock_credentials": False, "passthrough": {"urls": [r"http://127\.0\.0\.1.*"]}},
    }
    with moto.mock_aws(config=config):
        _queue_and_definition()
        yield


def _queue_and_definition() -> None:
    import boto3

    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.0.0/24")["Subnet"]["SubnetId"]
    group = ec2.create_security_group(GroupName="g", Description="g", VpcId=vpc)["GroupId"]
    batch = boto3.client("batch", region_name=REGION)
    env = batch.create_compute_environment(
        computeEnvironmentName="fargate",
        type="MANAGED",
        state="ENABLED",
        computeResources={
            "type": "FARGATE",
            "maxvCpus": 16,
            "subnets": [subnet],
            "securityGroupIds": [group],
        },
        serviceRole=role,
    )
    batch.create_job_queue(
        jobQueueName=QUEUE,
        state="ENABLED",
        priority=1,
        computeEnvironmentOrder=[{"order": 1, "computeEnvironment": env["computeEnvironmentArn"]}],
    )
    batch.register_job_definition(
        jobDefinitionName=DEFINITION,
        type="container",
        containerProperties={"image": "retrainer:test", "vcpus": 1, "memory": 512},
    )


def night_config(
    tmp_path: Path,
    data: Path,
    seaweed: SeaweedServer,
    bucket: str,
    symbols: list[str] = SYMBOLS,
    behaviours: dict[str, str] | None = None,
    batch: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    return write_config(
        tmp_path / "retrainer.toml",
        {
            **(extra or {}),
            "run": {
                "root": str(tmp_path / "root"),
                "symbols": ",".join(symbols),
                "retries": 1,
                "timeout_minutes": 0.05,  # 3 s: a hanging item is killed quickly
                "kill_grace_s": 1.0,
            },
            "data": {"path": str(data)},
            "trainer": (extra or {}).get("trainer")
            or {
                "plugin": "tests.support.plugins:light",
                "params": {"pid_dir": str(tmp_path / "pids"), "behaviours": behaviours or {}},
            },
            "storage": {
                "kind": "s3",
                "bucket": bucket,
                "prefix": "nightly",
                "endpoint_url": seaweed.endpoint_url,
                "addressing_style": "path",
                "region": REGION,
                "max_attempts": 2,
            },
            "batch": {
                "job_queue": QUEUE,
                "job_definition": DEFINITION,
                "region": REGION,
                "poll_s": 0.01,
                **(batch or {}),
            },
        },
    )


class Captured:
    """The requests our client sends, as Batch receives them."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def factory(self, settings: BatchSettings) -> BatchClient:
        client = BatchClient(settings)
        client._client.meta.events.register("provide-client-params.batch.*", self._seen)
        return client

    def _seen(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        self.calls.append((model.name, dict(params)))

    def of(self, operation: str) -> list[dict[str, Any]]:
        return [params for name, params in self.calls if name == operation]


def _settings(config: Path) -> Settings:
    return load_settings(config, environ={})


# -- submit ------------------------------------------------------------------------------
class TestSubmit:
    def test_a_night_is_one_array_job_with_one_child_per_item_its_retries_and_timeout(
        self, tmp_path: Path, small_data: Path, seaweed: SeaweedServer, batch_api: None
    ) -> None:
        bucket = new_bucket(seaweed)
        captured = Captured()
        settings = _settings(night_config(tmp_path, small_data, seaweed, bucket))

        submission = submit_night(
            settings, force=False, dry_run=False, client_factory=captured.factory
        )

        [request] = captured.of("SubmitJob")
        assert request["arrayProperties"] == {"size": len(SYMBOLS)}
        assert request["jobQueue"] == QUEUE and request["jobDefinition"] == DEFINITION
        assert request["retryStrategy"]["attempts"] == 2  # --retries 1
        rules = request["retryStrategy"]["evaluateOnExit"]
        assert rules[-1] == {"onReason": "*", "action": "EXIT"}  # Batch's default is RETRY
        assert {"onExitCode": str(EXIT_FOR_GOOD), "action": "EXIT"} in rules
        assert request["timeout"]["attemptDurationSeconds"] >= 60
        assert request["propagateTags"] is True
        assert request["tags"]["retrainer:plan"] == submission.plan.folder  # type: ignore[union-attr]
        assert request["containerOverrides"]["command"][:3] == ["batch", "child", "--plan"]
        plan = submission.plan
        assert plan is not None and [i.item_id for i in plan.items] == sorted(
            SYMBOLS, key=[i.item_id for i in plan.items].index
        )
        stored = json.loads(
            raw_s3(seaweed).get_object(Bucket=bucket, Key=f"nightly/{plan.plan_key}")["Body"].read()
        )
        assert BatchPlan.from_dict(stored).items == plan.items
        for item in plan.items:  # the data, once per symbol, named by its sha256
            key = f"nightly/{item.data_key}"
            assert item.data_sha256 in key
            raw_s3(seaweed).head_object(Bucket=bucket, Key=key)

    def test_a_second_submit_of_the_same_night_attaches_to_its_job_and_force_submits_again(
        self, tmp_path: Path, small_data: Path, seaweed: SeaweedServer, batch_api: None
    ) -> None:
        settings = _settings(night_config(tmp_path, small_data, seaweed, new_bucket(seaweed)))
        captured = Captured()

        first = submit_night(settings, force=False, dry_run=False, client_factory=captured.factory)
        second = submit_night(settings, force=False, dry_run=False, client_factory=captured.factory)
        forced = submit_night(settings, force=True, dry_run=False, client_factory=captured.factory)

        assert second.attached and second.job_id == first.job_id
        assert second.plan is not None and first.plan is not None
        assert second.plan.folder == first.plan.folder  # it reads the records of the first
        assert not forced.attached and forced.job_id != first.job_id
        assert len(captured.of("SubmitJob")) == 2
        assert captured.of("ListJobs")[0]["filters"] == [
            {"name": "JOB_NAME", "values": [first.plan.job_name]}
        ]

    def test_a_night_of_one_item_is_a_plain_job(
        self, tmp_path: Path, small_data: Path, seaweed: SeaweedServer, batch_api: None
    ) -> None:
        config = night_config(tmp_path, small_data, seaweed, new_bucket(seaweed), ["BTCUSDT"])
        captured = Captured()

        submit_night(_settings(config), force=False, dry_run=False, client_factory=captured.factory)

        [request] = captured.of("SubmitJob")
        assert "arrayProperties" not in request


def test_a_dry_run_prints_the_plan_and_the_request_and_writes_or_asks_nothing(
    tmp_path: Path, small_data: Path
) -> None:
    config = write_config(
        tmp_path / "c.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": "BTCUSDT,ETHUSDT"},
            "data": {"path": str(small_data)},
            "storage": {"kind": "s3", "bucket": "never-asked"},
            "batch": {"job_queue": QUEUE, "job_definition": DEFINITION},
        },
    )

    result = CliRunner().invoke(
        app, ["batch", "submit", "--dry_run", "--config", str(config)], env={"COLUMNS": "200"}
    )

    assert result.exit_code == 0, result.output
    request = json.loads(result.output[result.output.index("{\n") :])
    assert request["arrayProperties"] == {"size": 2} and request["jobQueue"] == QUEUE
    assert not (tmp_path / "root").exists()


class TestDefinition:
    def test_the_definition_is_printed_from_the_batch_section(self, tmp_path: Path) -> None:
        config = write_config(
            tmp_path / "c.toml",
            {
                "batch": {
                    "image": "123.dkr.ecr.eu-west-1.amazonaws.com/retrainer:1",
                    "vcpus": 0.5,
                    "memory_mb": 1024,
                    "job_role_arn": "arn:aws:iam::123:role/job",
                    "job_definition": "nightly:3",
                }
            },
        )

        result = CliRunner().invoke(app, ["batch", "definition", "--config", str(config)])

        assert result.exit_code == 0, result.output
        request = json.loads(result.output)
        container = request["containerProperties"]
        assert request["jobDefinitionName"] == "nightly"
        assert request["platformCapabilities"] == ["FARGATE"]
        assert container["command"] == ["batch", "child"]
        assert container["jobRoleArn"] == "arn:aws:iam::123:role/job"
        assert {"type": "VCPU", "value": "0.5"} in container["resourceRequirements"]
        assert {"type": "MEMORY", "value": "1024"} in container["resourceRequirements"]

    def test_gpus_on_fargate_are_refused(self, tmp_path: Path) -> None:
        config = write_config(tmp_path / "c.toml", {"batch": {"image": "i", "gpus": 1}})

        result = CliRunner().invoke(app, ["batch", "definition", "--config", str(config)])

        assert result.exit_code == 2 and "Fargate has no GPUs" in result.output

    def test_a_secret_in_the_jobs_environment_is_refused(self, tmp_path: Path) -> None:
        config = write_config(
            tmp_path / "c.toml", {"batch": {"environment": {"API_TOKEN": "abc", "TZ": "UTC"}}}
        )

        with pytest.raises(BadInputError, match="API_TOKEN: secrets do not go"):
            load_settings(config, environ={})

    def test_register_registers_it_with_batch(
        self, tmp_path: Path, seaweed: SeaweedServer, batch_api: None
    ) -> None:
        config = write_config(
            tmp_path / "c.toml",
            {
                "batch": {
                    "image": "retrainer:2",
                    "job_definition": "fresh-definition",
                    "region": REGION,
                }
            },
        )

        result = CliRunner().invoke(
            app, ["batch", "definition", "--register", "--config", str(config)]
        )

        assert result.exit_code == 0, result.output
        assert "job-definition/fresh-definition:1" in result.output
        assert BatchClient(BatchSettings(region=REGION)).definition_exists("fresh-definition")


class TestBadInput:
    """One clear message, exit 2, nothing submitted."""

    def _submit(self, config: Path) -> Any:
        return CliRunner().invoke(app, ["batch", "submit", "--config", str(config)])

    def _jobs(self) -> list[Any]:
        import boto3

        client = boto3.client("batch", region_name=REGION)
        return list(client.list_jobs(jobQueue=QUEUE, jobStatus="SUCCEEDED")["jobSummaryList"])

    @pytest.mark.parametrize(
        ("batch", "said"),
        [
            ({"job_queue": "no-such-queue"}, "no such job queue"),
            ({"job_definition": "no-such-definition"}, "no such active job definition"),
        ],
    )
    def test_a_missing_queue_or_definition(
        self,
        tmp_path: Path,
        small_data: Path,
        seaweed: SeaweedServer,
        batch_api: None,
        batch: dict[str, str],
        said: str,
    ) -> None:
        config = night_config(tmp_path, small_data, seaweed, new_bucket(seaweed), batch=batch)

        result = self._submit(config)

        assert result.exit_code == 2 and said in result.output
        assert self._jobs() == []

    def test_a_bucket_that_does_not_exist(
        self, tmp_path: Path, small_data: Path, seaweed: SeaweedServer, batch_api: None
    ) -> None:
        config = night_config(tmp_path, small_data, seaweed, "no-such-bucket-here")

        result = self._submit(config)

        assert result.exit_code == 2 and "bucket cannot be used" in result.output
        assert "NoSuchBucket" in result.output
        assert self._jobs() == []

    def test_no_credentials(
        self,
        tmp_path: Path,
        small_data: Path,
        seaweed: SeaweedServer,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        config = night_config(tmp_path, small_data, seaweed, "any-bucket")
        for name in list(os.environ):
            if name.startswith("AWS_"):
                monkeypatch.delenv(name)
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")

        result = self._submit(config)

        assert result.exit_code == 2 and "no AWS credentials" in result.output

    def test_no_queue_configured(self, tmp_path: Path, small_data: Path) -> None:
        config = write_config(
            tmp_path / "c.toml",
            {
                "data": {"path": str(small_data)},
                "storage": {"kind": "s3", "bucket": "b-b-b"},
            },
        )

        result = self._submit(config)

        assert result.exit_code == 2 and "[batch] job_queue is missing" in result.output


# -- Batch's rules and API, as we read them ------------------------------------------------
class TestRules:
    @pytest.mark.parametrize(
        ("exit_code", "status_reason", "action"),
        [
            (EXIT_RETRY, "", "RETRY"),
            (137, "", "RETRY"),
            (None, "Host EC2 (instance i-0abc) terminated.", "RETRY"),
            (EXIT_FOR_GOOD, "", "EXIT"),
            (1, "Essential container in task exited", "EXIT"),
        ],
    )
    def test_each_end_is_retried_or_not_by_the_rules_we_send(
        self, exit_code: int | None, status_reason: str, action: str
    ) -> None:
        assert evaluate_on_exit(RETRY_RULES, exit_code, status_reason, "reason") == action

    def test_no_rule_matching_means_batch_retries(self) -> None:
        assert evaluate_on_exit([{"onExitCode": "3", "action": "EXIT"}], 4) == "RETRY"

    def test_polling_waits_are_jittered_around_poll_s(self) -> None:
        delays = {round(poll_delay_s(10.0, random.Random(seed)), 6) for seed in range(20)}
        assert len(delays) > 10 and all(8.0 <= d <= 12.0 for d in delays)


class _Throttled(Exception):
    def __init__(self) -> None:
        self.response = {"Error": {"Code": "TooManyRequestsException", "Message": "slow down"}}


class _FakeBatch:
    """Throttles every other call; list_jobs in pages of two; describe_jobs counts ids."""

    def __init__(self) -> None:
        self.calls = 0
        self.described: list[int] = []

    def _throttle(self) -> None:
        self.calls += 1
        if self.calls % 2:
            raise _Throttled()

    def list_jobs(self, **kwargs: Any) -> dict[str, Any]:
        self._throttle()
        start = int(kwargs.get("nextToken", "0"))
        page = [{"jobId": f"a:{i}", "status": "SUCCEEDED"} for i in range(start, min(start + 2, 5))]
        return {"jobSummaryList": page, **({"nextToken": str(start + 2)} if start + 2 < 5 else {})}

    def describe_jobs(self, jobs: list[str]) -> dict[str, Any]:
        self._throttle()
        self.described.append(len(jobs))
        return {"jobs": [{"jobId": j} for j in jobs]}


def test_the_client_survives_throttling_reads_every_page_and_describes_in_hundreds() -> None:
    client = BatchClient(BatchSettings(region=REGION), sleep=lambda _s: None)
    fake = _FakeBatch()
    client._client = fake
    client._client_error = _Throttled

    children = client.children("a")
    described = client.describe([f"j{i}" for i in range(250)])

    assert [c["jobId"] for c in children] == [f"a:{i}" for i in range(5)]
    assert len(described) == 250 and fake.described == [100, 100, 50]


# -- a whole night ---------------------------------------------------------------------------
def _child(
    plan: BatchPlan, index: int, attempt: int, env: dict[str, str], killed: bool = False
) -> subprocess.Popen[str]:
    module = "tests.support.batch_child" if killed else "retrainer"
    args = [] if killed else ["batch", "child"]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            module,
            *args,
            "--plan",
            plan.uri(),
            "--endpoint_url",
            plan.location.endpoint_url or "",
            "--addressing_style",
            "path",
        ],
        cwd=REPO,
        env=cli_env(
            {**env, "AWS_BATCH_JOB_ARRAY_INDEX": str(index), "AWS_BATCH_JOB_ATTEMPT": str(attempt)}
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


class BatchSays:
    """Batch's own word on each child's attempts (describe_jobs' attempts[]: exit code,
    reasons, times), which moto cannot give (it runs no container: one attempt, no exit
    code): the test plays Batch, so it overlays what it played on moto's answers."""

    def __init__(self) -> None:
        self.attempts: dict[str, list[dict[str, Any]]] = {}

    def client(self, settings: BatchSettings) -> BatchClient:
        client = BatchClient(settings)
        client._client.meta.events.register("after-call.batch.DescribeJobs", self._overlay)
        return client

    def _overlay(self, parsed: dict[str, Any], **_: Any) -> None:
        for job in parsed.get("jobs", []):
            if job.get("jobId") in self.attempts:
                job["attempts"] = self.attempts[job["jobId"]]

    def ended(
        self, job_id: str, code: int, status_reason: str, started_ms: int, reason: str = ""
    ) -> None:
        stopped = int(time.time() * 1000)
        self.attempts.setdefault(job_id, []).append(
            {
                "container": {"exitCode": code, "reason": reason},
                "statusReason": status_reason,
                "startedAt": started_ms,
                "stoppedAt": stopped,
            }
        )


SPOT_RECLAIM = "Host EC2 (instance i-0abc) terminated."
ESSENTIAL_EXITED = "Essential container in task exited"
BATCH_TIMEOUT = "Job attempt duration exceeded timeout"


def play_batch(
    plan: BatchPlan,
    env: dict[str, str],
    attempts: int,
    killed_first: set[int],
    job_id: str,
    says: BatchSays,
) -> dict[int, list[int]]:
    """Batch's part: every child at once, each attempt's end read by the rules we sent;
    the indices in killed_first are SIGKILLed mid-upload on their first attempt (a spot
    reclaim, as Batch then tells it)."""
    codes: dict[int, list[int]] = {i.index: [] for i in plan.items}
    pending = [i.index for i in plan.items]
    for attempt in range(1, attempts + 1):
        started_ms = int(time.time() * 1000)
        running = {
            i: _child(plan, i, attempt, env, killed=attempt == 1 and i in killed_first)
            for i in pending
        }
        pending = []
        for index, child in running.items():
            output, _ = child.communicate(timeout=60)
            code = child.returncode if child.returncode >= 0 else 128 - child.returncode
            codes[index].append(code)
            reclaimed = code == 137
            child_id = f"{job_id}:{index}" if len(plan.items) > 1 else job_id
            says.ended(child_id, code, SPOT_RECLAIM if reclaimed else ESSENTIAL_EXITED, started_ms)
            if code != EXIT_OK and evaluate_on_exit(RETRY_RULES, code) == "RETRY":
                pending.append(index)
            assert code in (EXIT_OK, EXIT_RETRY, EXIT_FOR_GOOD, 137), output
    return codes


def test_a_night_on_batch_hangs_crashes_and_a_killed_child_retried_assemble_a_verified_night(
    tmp_path: Path,
    small_data: Path,
    seaweed: SeaweedServer,
    batch_api: None,
    aws_env: dict[str, str],
) -> None:
    behaviours = {"ETHUSDT": "hang", "SOLUSDT": "segfault"}
    config = night_config(tmp_path, small_data, seaweed, new_bucket(seaweed), behaviours=behaviours)
    settings = _settings(config)
    submission = submit_night(settings, force=False, dry_run=False)
    plan = submission.plan
    assert plan is not None
    index = {i.item_id: i.index for i in plan.items}

    says = BatchSays()
    job_id = str(submission.job_id)
    codes = play_batch(plan, aws_env, 2, {index["BNBUSDT"]}, job_id, says)
    seen: list[Seen] = []
    code = watch_night(
        settings,
        plan.day,
        watch=True,
        reporter=_Quiet(),
        show=seen.append,
        client=says.client(settings.batch),
    )

    assert codes[index["BTCUSDT"]] == [EXIT_OK]
    assert codes[index["ETHUSDT"]] == [EXIT_RETRY, EXIT_RETRY]  # killed at its deadline, twice
    assert codes[index["SOLUSDT"]] == [EXIT_RETRY, EXIT_RETRY]
    assert codes[index["BNBUSDT"]] == [137, EXIT_OK]
    assert code == 1  # some items failed
    layout, day = Layout(tmp_path / "root"), plan.day
    entries = read_ledger(layout.status_path(day), layout.journal_path(day)).entries
    assert entries["BTCUSDT"].state == "success"
    assert entries["ETHUSDT"].state == "timeout" and len(entries["ETHUSDT"].attempts) == 2
    crashed = entries["SOLUSDT"].attempts[-1]
    assert entries["SOLUSDT"].state == "failed" and "SIGSEGV" in (crashed.reason or "")
    log = layout.symbol_log_dir(day, "SOLUSDT") / "attempt-2.log"
    assert f"see {log}" in (crashed.reason or "") and log.is_file()  # the log came home
    # The killed attempt left no record: Batch's word on it is in the ledger all the same.
    assert entries["BNBUSDT"].state == "success"
    reclaimed, retried = entries["BNBUSDT"].attempts
    assert (reclaimed.number, reclaimed.state, reclaimed.exit_code) == (1, "interrupted", 137)
    assert SPOT_RECLAIM in (reclaimed.reason or "") and reclaimed.error_type == "NoRecord"
    assert (retried.number, retried.state) == (2, "success")
    summary = read_json(layout.summary_path(day))
    assert (summary["succeeded"], summary["failed"], summary["timed_out"]) == (2, 2, 1)
    assert summary["driver"] == "batch" and summary["batch_job_id"] == submission.job_id
    assert seen[-1].counts.succeeded and seen[-1].job.ended
    for pid_file in (tmp_path / "pids").glob("*.pid"):  # nothing of ours outlives its child
        pid = int(pid_file.read_text())
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    env = cli_env(aws_env)
    for args in (["verify"], ["verify", "--remote"]):
        verified = subprocess.run(
            [sys.executable, "-m", "retrainer", *args, "--config", str(config)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
        out = verified.stdout
        assert "2 symbols checked" in out and out.rstrip().endswith("0 with problems"), out
    # A second look finds the night assembled: nothing recorded twice.
    looked = CliRunner().invoke(app, ["batch", "status", "--json", "--config", str(config)])
    assert looked.exit_code == code, looked.output
    last = json.loads(looked.output.strip().splitlines()[-1])
    assert (last["succeeded"], last["failed"], last["job_status"]) == (2, 2, "SUCCEEDED")
    after = read_ledger(layout.status_path(day), layout.journal_path(day)).entries
    assert {k: len(e.attempts) for k, e in after.items()} == {
        "BTCUSDT": 1,
        "ETHUSDT": 2,
        "SOLUSDT": 2,
        "BNBUSDT": 2,
    }
    assert run_day(now_utc()) == day


def test_attempts_batch_killed_before_their_record_are_each_in_the_ledger(
    tmp_path: Path, small_data: Path, seaweed: SeaweedServer, batch_api: None
) -> None:
    """No child ever reached its commit: Batch's timeout killed both attempts (exit 137
    and its reason). The ledger has both, as timeouts, and the night says it failed."""
    config = night_config(tmp_path, small_data, seaweed, new_bucket(seaweed), ["BTCUSDT"])
    settings = _settings(config)
    submission = submit_night(settings, force=False, dry_run=False)
    assert submission.plan is not None and submission.job_id is not None
    says = BatchSays()
    for _ in range(2):
        says.ended(submission.job_id, 137, ESSENTIAL_EXITED, 1_790_000_000_000, BATCH_TIMEOUT)

    code = watch_night(
        settings,
        submission.plan.day,
        watch=False,
        reporter=_Quiet(),
        show=lambda _seen: None,
        client=says.client(settings.batch),
    )

    assert code == 1
    layout, day = Layout(tmp_path / "root"), submission.plan.day
    entry = read_ledger(layout.status_path(day), layout.journal_path(day)).entries["BTCUSDT"]
    assert entry.state == "timeout"
    assert [(a.number, a.state, a.exit_code) for a in entry.attempts] == [
        (1, "timeout", 137),
        (2, "timeout", 137),
    ]
    assert all(BATCH_TIMEOUT in (a.reason or "") for a in entry.attempts)
    summary = read_json(layout.summary_path(day))
    assert (summary["failed"], summary["timed_out"]) == (1, 1)


@pytest.mark.parametrize(
    ("exit_code", "status_reason", "reason", "state"),
    [
        (137, ESSENTIAL_EXITED, BATCH_TIMEOUT, "timeout"),
        (None, BATCH_TIMEOUT, "", "timeout"),
        (137, SPOT_RECLAIM, "", "interrupted"),
        (None, SPOT_RECLAIM, "", "interrupted"),
        (137, ESSENTIAL_EXITED, "", "interrupted"),
        (1, ESSENTIAL_EXITED, "OutOfMemoryError: Container killed due to memory usage", "failed"),
        (None, "", "", "failed"),
    ],
)
def test_an_unrecorded_attempt_ends_as_batch_says(
    exit_code: int | None, status_reason: str, reason: str, state: str
) -> None:
    from retrainer.job.batch.status import batch_attempts

    child = {
        "attempts": [
            {
                "container": {"exitCode": exit_code, "reason": reason},
                "statusReason": status_reason,
                "startedAt": 1000,
                "stoppedAt": 4500,
            }
        ]
    }

    [told] = batch_attempts(child)

    outcome = told.outcome()
    assert (told.number, told.seconds, outcome.state.value) == (1, 3.5, state)
    assert outcome.error_type == "NoRecord" and status_reason in outcome.reason


def test_the_champion_travels_to_the_child_and_the_gate_judges_it_re_scored(
    tmp_path: Path,
    small_data: Path,
    seaweed: SeaweedServer,
    batch_api: None,
    aws_env: dict[str, str],
) -> None:
    """A second night on Batch: the first night's champion goes to the child through the
    bucket (once, by its sha256), the attempt re-scores it on its own test span
    (champion_eval.json), and the gate judges on that, as a local night's gate does."""
    bucket = new_bucket(seaweed)

    def night(log_loss: float, force: bool) -> tuple[BatchPlan, int]:
        params = {"scores": {"BTCUSDT": {"test_log_loss": log_loss}}, "rescore_shift": 0.05}
        trainer = {"plugin": "tests.support.graded:graded", "params": params}
        config = night_config(
            tmp_path, small_data, seaweed, bucket, ["BTCUSDT"], extra={"trainer": trainer}
        )
        settings = _settings(config)
        submission = submit_night(settings, force=force, dry_run=False)
        assert submission.plan is not None
        says = BatchSays()
        play_batch(submission.plan, aws_env, 1, set(), str(submission.job_id), says)
        code = watch_night(
            settings,
            submission.plan.day,
            watch=False,
            reporter=_Quiet(),
            show=lambda _seen: None,
            client=says.client(settings.batch),
        )
        return submission.plan, int(code)

    first, code = night(0.69, force=False)
    assert code == 0 and first.items[0].champion_key is None  # no champion yet
    layout, day = Layout(tmp_path / "root"), first.day
    entry = read_ledger(layout.status_path(day), layout.journal_path(day)).entries["BTCUSDT"]
    assert entry.promotion is not None and entry.promotion["decision"] == "first_model"
    champion_dir = entry.artifact_dir

    # Reported, the champion (0.69) beats 0.70; re-scored by the child it does 0.74.
    second, code = night(0.70, force=True)

    assert code == 0
    [item] = second.items
    assert item.champion_dir == champion_dir and item.champion_key is not None
    assert item.champion_sha256 is not None and item.champion_sha256 in item.champion_key
    raw_s3(seaweed).head_object(Bucket=bucket, Key=f"nightly/{item.champion_key}")
    entry = read_ledger(layout.status_path(day), layout.journal_path(day)).entries["BTCUSDT"]
    promotion = entry.promotion
    assert promotion is not None
    assert (promotion["decision"], promotion["basis"]) == ("promoted", "re-evaluated")
    assert promotion["champion_dir"] == champion_dir
    assert entry.artifact_dir is not None and entry.artifact_dir != champion_dir
    scored = read_json(layout.root / entry.artifact_dir / "champion_eval.json")
    assert scored["ok"] and scored["metrics"]["test_log_loss"] == pytest.approx(0.74)


def test_batch_status_tells_the_webhook_the_nights_start_and_finish_exactly_once(
    tmp_path: Path,
    small_data: Path,
    seaweed: SeaweedServer,
    batch_api: None,
    aws_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The night's notifications go out when `batch status` assembles it; a second
    `batch status` finds it assembled and tells no one again."""
    hooks = RecordingServer().start()
    try:
        config = night_config(
            tmp_path,
            small_data,
            seaweed,
            new_bucket(seaweed),
            ["BTCUSDT", "ETHUSDT"],
            behaviours={"ETHUSDT": "raise"},
            extra={"notify": {"kind": "webhook", "close_timeout_s": 10, "batch_window_s": 0}},
        )
        submission = submit_night(_settings(config), force=False, dry_run=False)
        assert submission.plan is not None
        play_batch(submission.plan, aws_env, 2, set(), str(submission.job_id), BatchSays())
        monkeypatch.setenv(WEBHOOK_URL_ENV, f"{hooks.url}/night")

        looks = [
            CliRunner().invoke(app, ["batch", "status", "--json", "--config", str(config)])
            for _ in range(2)
        ]

        assert [look.exit_code for look in looks] == [1, 1], looks[0].output
        events = [r.json()["event"] for r in hooks.requests if r.path == "/night"]
        assert events.count("run_started") == 1 and events.count("run_finished") == 1
        assert events[0] == "run_started" and events[-1] == "run_finished"
        finished = next(r.json() for r in hooks.requests if r.json()["event"] == "run_finished")
        assert finished["exit_code"] == 1 and finished["counts"]["failed"] == 1
        assert "ETHUSDT" in finished["failures"]
        assert finished["run_id"] == submission.plan.run_id
    finally:
        hooks.stop()


def test_a_search_on_batch_gives_each_candidate_its_params_folder_and_record(
    tmp_path: Path,
    small_data: Path,
    seaweed: SeaweedServer,
    batch_api: None,
    aws_env: dict[str, str],
) -> None:
    """Item ids with a "/" ("BTCUSDT/c01"): the plan, the records, the attempt folders and
    the ledger keep them apart, and each child trains with its own candidate's params."""
    bucket = new_bucket(seaweed)
    extra = {
        "trainer": {"plugin": "retrainer.training.trainer:train", "params": TINY_TRAINER},
        "search": {"enabled": True, "space": {"learning_rate": [0.001, 0.01]}, "budget": 2},
    }
    settings = _settings(
        night_config(tmp_path, small_data, seaweed, bucket, ["BTCUSDT"], extra=extra)
    )
    submission = submit_night(settings, force=False, dry_run=False)
    plan = submission.plan
    assert plan is not None

    play_batch(plan, aws_env, 1, set(), str(submission.job_id), BatchSays())
    code = watch_night(settings, plan.day, watch=False, reporter=_Quiet(), show=lambda _s: None)

    assert code == 0
    assert [(i.item_id, (i.params or {}).get("learning_rate")) for i in plan.items] == [
        ("BTCUSDT/c00", 0.001),
        ("BTCUSDT/c01", 0.01),
    ]
    keys = {
        o["Key"]
        for o in raw_s3(seaweed).list_objects_v2(Bucket=bucket, Prefix="nightly/")["Contents"]
    }
    for item in plan.items:
        assert f"nightly/{plan.record_key(item.item_id, 1)}" in keys
        assert f"nightly/{plan.tar_key(item.item_id, 1)}" in keys
    layout, day = Layout(tmp_path / "root"), plan.day
    entries = read_ledger(layout.status_path(day), layout.journal_path(day)).entries
    for item in plan.items:
        entry = entries[item.item_id]
        assert entry.state == "success", entry
        assert entry.artifact_dir is not None
        assert entry.artifact_dir.startswith("models/BTCUSDT/")
        assert entry.artifact_dir.endswith(item.item_id.partition("/")[2])
        trained = read_json(layout.root / entry.artifact_dir / "config.json")
        assert trained["params"]["learning_rate"] == (item.params or {})["learning_rate"]
    summary = read_json(layout.summary_path(day))
    assert summary["searches"]["BTCUSDT"]["done"] == 2


class _Quiet:
    """A NightReporter that shows nothing."""

    def plan(self, plan: Any, dry_run: bool) -> None:
        return None

    def progress(self, *args: Any) -> Any:
        import contextlib

        return contextlib.nullcontext()

    def result(self, summary: dict[str, Any], summary_path: Path) -> None:
        return None


def test_a_child_with_an_index_past_the_plan_fails_for_good_and_runs_nothing(
    tmp_path: Path, small_data: Path, seaweed: SeaweedServer, batch_api: None
) -> None:
    from retrainer.job.batch.child import run_child

    config = night_config(tmp_path, small_data, seaweed, new_bucket(seaweed))
    plan = submit_night(_settings(config), force=False, dry_run=False).plan
    assert plan is not None

    code = run_child(
        plan.uri(),
        endpoint_url=seaweed.endpoint_url,
        addressing_style="path",
        environ={"AWS_BATCH_JOB_ARRAY_INDEX": str(len(plan.items))},
    )

    assert code == EXIT_FOR_GOOD
    assert not (tmp_path / "pids").exists()


def test_submit_refuses_a_night_without_s3_storage() -> None:
    from retrainer.job.batch.submit import check_settings

    with pytest.raises(BadInputError, match='kind = "s3"'):
        check_settings(Settings())


def test_a_child_run_by_hand_numbers_its_attempt_after_its_own_items_records_only() -> None:
    """The folder of BTCUSDT's records holds BTCUSDT/c03's one level down: not its own."""
    from types import SimpleNamespace

    from retrainer.job.batch.child import _attempt_number

    folder = "runs/d/batch/job/sub"
    plan = SimpleNamespace(record_folder=lambda item_id: f"{folder}/records/{item_id}")
    keys = [
        f"{folder}/records/BTCUSDT/attempt-1.json",
        f"{folder}/records/BTCUSDT/c03/attempt-1.json",
        f"{folder}/records/BTCUSDT/c03/attempt-2.json",
        f"{folder}/records/BTCUSDT/c03/attempt-3.json",
    ]
    storage = SimpleNamespace(list_keys=lambda prefix: [k for k in keys if k.startswith(prefix)])

    def number(item_id: str) -> int:
        item = SimpleNamespace(item_id=item_id)
        return _attempt_number({}, storage, plan, item)  # type: ignore[arg-type]

    assert (number("BTCUSDT"), number("BTCUSDT/c03"), number("ETHUSDT")) == (2, 4, 1)
