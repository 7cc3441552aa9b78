"""MLflow tracking against real MLflow stores: a SQLite store under the root, and an
`mlflow server` on loopback. Nothing of MLflow is mocked: each test records real ledger
entries for real attempt folders, calls the listener's hooks as the engine does, then
reads what MLflow holds through its own client."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from structlog.testing import capture_logs

from retrainer.base.artifacts import Layout, write_manifest
from retrainer.base.config import MlflowSettings
from retrainer.base.optional import MissingExtraError
from retrainer.job.mlflow_runs import run_metrics, run_params, tracking_uri
from retrainer.job.mlflow_tracking import MlflowListener
from retrainer.ledger.entries import Attempt, ItemState, LedgerEntry
from retrainer.ledger.journal import Ledger
from tests.support.processes import assert_all_dead

pytest.importorskip("mlflow")
from mlflow.tracking import MlflowClient  # noqa: E402

pytestmark = [
    # SQLAlchemy 2.1 deprecates a loader mlflow's store still names (DeprecationWarning,
    # which Python hides outside tests); it fires in the listener's thread.
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning"),
    pytest.mark.timeout(120),
]

TRAINER = "retrainer.training.trainer:train"
PARAMS = {"hidden_sizes": [8], "lr": 0.01, "early_stop": {"patience_epochs": 2}}


# ------------------------------------------------------------------------ the night's side


@dataclass
class Night:
    """One night's ledger and listener over a root; attempts recorded as the engine does."""

    layout: Layout
    ledger: Ledger
    listener: MlflowListener
    run_id: str

    def success(self, symbol: str, stamp: str, decision: str, **metrics: Any) -> Path:
        folder = attempt_folder(self.layout, symbol, stamp, metrics)
        entry = ledger_entry(self.layout, symbol, folder, self.run_id, decision, metrics)
        self.listener.attempt_started(symbol, folder)
        self.listener.attempt_ended(symbol, folder)
        self.ledger.record(entry)  # the engine, then the promotion listener, record first
        self.listener.item_succeeded(symbol, folder, sorted(folder.iterdir()))
        return folder

    def end(self, summary: dict[str, Any] | None = None) -> None:
        self.listener.drain()
        self.listener.close(summary)
        self.ledger.close()


def open_night(root: Path, run_id: str, **settings: Any) -> Night:
    layout = Layout(root)
    day = "20261123Z"
    ledger = Ledger(layout.status_path(day), layout.journal_path(day))
    chosen = MlflowSettings(enabled=True, **settings)
    return Night(layout, ledger, MlflowListener(chosen, layout, ledger, run_id, TRAINER), run_id)


def attempt_folder(layout: Layout, symbol: str, stamp: str, metrics: dict[str, Any]) -> Path:
    folder = layout.model_dir(symbol) / stamp
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"weights of " + stamp.encode())
    config = {"symbol": symbol, "params": PARAMS, "seed": 7, "device": "cpu"}
    config |= {"data_sha256": "d" * 64, "code_version": "0.1.0"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "features.parquet").write_bytes(b"not logged")
    write_manifest(folder)
    return folder


def ledger_entry(
    layout: Layout,
    symbol: str,
    folder: Path,
    run_id: str,
    decision: str,
    metrics: dict[str, Any],
) -> LedgerEntry:
    relative = layout.relative(folder)
    attempt = Attempt(1, ItemState.SUCCESS, "t", relative, device="cpu", threads=1, node="head")
    reason = "net_sharpe not better" if decision == "kept_champion" else ""
    return LedgerEntry(
        symbol=symbol,
        state=ItemState.SUCCESS,
        updated_at="t",
        attempts=(attempt,),
        artifact_dir=relative,
        manifest_sha256="m" * 64,
        metrics=metrics,
        run_id=run_id,
        promotion={"decision": decision, "reason": reason, "basis": "reported", "checks": []},
    )


# ------------------------------------------------------------------------ MLflow's side


def client_for(root: Path) -> MlflowClient:
    uri = tracking_uri(MlflowSettings(), root)
    return MlflowClient(uri, uri)


def attempt_runs(client: MlflowClient, symbol: str) -> list[Any]:
    experiment = client.get_experiment_by_name("retrainer")
    assert experiment is not None
    found = client.search_runs(
        [experiment.experiment_id],
        f"tags.`retrainer.symbol` = '{symbol}'",
        order_by=["attributes.start_time ASC"],
    )
    return list(found)


def champion_version(client: MlflowClient, name: str) -> str:
    return str(client.get_model_version_by_alias(name, "champion").version)


# ------------------------------------------------------------------------ the tests


def test_a_success_becomes_a_run_with_its_params_metrics_tags_and_files(tmp_path: Path) -> None:
    night = open_night(tmp_path, "run-1")
    folder = night.success(
        "BTCUSDT", "20261123_020005Z", "first_model", net_sharpe=1.25, n_test=300, note="x"
    )
    night.end()

    client = client_for(tmp_path)
    (run,) = attempt_runs(client, "BTCUSDT")
    assert run.info.run_name == "BTCUSDT 20261123_020005Z"
    assert run.info.status == "FINISHED"
    assert run.data.params == {
        "hidden_sizes": "[8]",
        "lr": "0.01",
        "early_stop.patience_epochs": "2",
        "seed": "7",
    }
    assert run.data.metrics == {"net_sharpe": 1.25, "n_test": 300.0}
    tags = run.data.tags
    assert tags["retrainer.run_id"] == "run-1"
    assert tags["retrainer.attempt_dir"] == folder.name
    assert tags["retrainer.manifest_sha256"] == "m" * 64
    assert tags["retrainer.trainer"] == TRAINER
    assert (tags["retrainer.node"], tags["retrainer.device"]) == ("head", "cpu")
    assert tags["retrainer.decision"] == "first_model"
    logged = {f.path for f in client.list_artifacts(run.info.run_id)}
    assert logged == {"model.bin", "config.json", "metrics.json", "sha256.txt", "promotion.json"}
    assert (tmp_path / "mlflow" / "mlflow.db").is_file()
    assert run.info.artifact_uri.startswith((tmp_path / "mlflow" / "artifacts").as_uri())


def test_the_champion_alias_moves_only_when_the_gate_promotes(tmp_path: Path) -> None:
    first = open_night(tmp_path, "night-1")
    first.success("ETHUSDT", "20261123_020005Z", "first_model", net_sharpe=1.0)
    first.end()
    second = open_night(tmp_path, "night-2")  # a worse challenger: the gate keeps night 1's
    second.success("ETHUSDT", "20261124_020005Z", "kept_champion", net_sharpe=0.2)
    second.end()

    client = client_for(tmp_path)
    found = client.search_model_versions("name = 'retrainer-ETHUSDT'")
    versions = {str(v.version): v for v in found}
    assert sorted(versions) == ["1", "2"]
    assert champion_version(client, "retrainer-ETHUSDT") == "1"
    assert versions["2"].tags["retrainer.decision"] == "kept_champion"
    assert versions["2"].tags["retrainer.decision_reason"] == "net_sharpe not better"
    runs = attempt_runs(client, "ETHUSDT")
    assert [v.run_id for _, v in sorted(versions.items())] == [r.info.run_id for r in runs]

    third = open_night(tmp_path, "night-3")
    third.success("ETHUSDT", "20261125_020005Z", "promoted", net_sharpe=2.0)
    third.end()
    assert champion_version(client, "retrainer-ETHUSDT") == "3"


def test_with_artifacts_uri_no_file_is_copied_and_the_folder_is_tagged(tmp_path: Path) -> None:
    night = open_night(tmp_path, "run-1", artifacts="uri", model_prefix="m-")
    folder = night.success("SOLUSDT", "20261123_020005Z", "first_model", net_sharpe=1.0)
    night.end()

    client = client_for(tmp_path)
    (run,) = attempt_runs(client, "SOLUSDT")
    assert client.list_artifacts(run.info.run_id) == []
    assert run.data.tags["retrainer.artifact_uri"] == folder.resolve().as_uri()
    assert champion_version(client, "m-SOLUSDT") == "1"


def test_a_failed_item_is_a_failed_run_with_its_reason(tmp_path: Path) -> None:
    night = open_night(tmp_path, "run-1")
    night.listener.item_failed("XRPUSDT", "exit code 1: ValueError")
    night.end()

    (run,) = attempt_runs(client_for(tmp_path), "XRPUSDT")
    assert run.info.status == "FAILED"
    assert run.data.tags["retrainer.reason"] == "exit code 1: ValueError"


def test_the_night_is_a_parent_run_holding_the_summary_counts(tmp_path: Path) -> None:
    night = open_night(tmp_path, "run-9")
    night.success("BTCUSDT", "20261123_020005Z", "first_model", net_sharpe=1.0)
    night.end({"succeeded": 1, "failed": 0, "exit_code": 0, "symbols": {"BTCUSDT": {}}})

    client = client_for(tmp_path)
    (attempt,) = attempt_runs(client, "BTCUSDT")
    parent = client.get_run(attempt.data.tags["mlflow.parentRunId"])
    assert parent.info.run_name == "night run-9"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics == {"succeeded": 1.0, "failed": 0.0, "exit_code": 0.0}
    assert parent.data.tags["retrainer.exit_code"] == "0"


def test_the_hooks_return_at_once_while_mlflow_starts_in_the_listeners_thread(
    tmp_path: Path,
) -> None:
    began = time.monotonic()
    night = open_night(tmp_path, "run-1")  # a fresh store: import and migrations to come
    night.success("BTCUSDT", "20261123_020005Z", "first_model", net_sharpe=1.0)
    assert time.monotonic() - began < 0.5
    night.end()
    assert len(attempt_runs(client_for(tmp_path), "BTCUSDT")) == 1


def closed_port_uri() -> str:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def mlflow_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "retrainer-mlflow"]


def test_a_server_still_retrying_at_drain_is_left_after_close_timeout_s_and_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MLflow's own client retries a refused connection (minutes by default; ~3 s here).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    with capture_logs() as logs:
        night = open_night(tmp_path, "run-1", tracking_uri=closed_port_uri(), close_timeout_s=1.0)
        night.success("BTCUSDT", "20261123_020005Z", "first_model", net_sharpe=1.0)
        night.listener.item_failed("ETHUSDT", "boom")
        began = time.monotonic()
        night.end()
        waited = time.monotonic() - began

    assert waited < 3.0
    failed = [e for e in logs if e["event"] == "mlflow_failed"]
    assert {e.get("symbol") for e in failed} == {"BTCUSDT", "ETHUSDT"}
    assert all("close_timeout_s" in e["reason"] for e in failed)
    for thread in mlflow_threads():  # it ends by itself once MLflow's client gives up
        thread.join(30)
    assert not mlflow_threads()


def test_a_server_unreachable_at_the_start_is_not_tried_again_for_each_item(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with capture_logs() as logs:
        night = open_night(tmp_path, "run-1", tracking_uri=closed_port_uri())
        night.success("BTCUSDT", "20261123_020005Z", "first_model", net_sharpe=1.0)
        night.success("ETHUSDT", "20261123_020006Z", "first_model", net_sharpe=1.0)
        night.end({"succeeded": 2})

    failed = [e for e in logs if e["event"] == "mlflow_failed"]
    assert [e["what"] for e in failed] == ["connect", "success", "success", "night"]
    assert "unusable since the start" in failed[1]["reason"]
    assert "ConnectionError" in failed[0]["reason"] or "Max retries" in failed[0]["reason"]


def test_metrics_keep_finite_numbers_only_and_params_are_flat_strings() -> None:
    metrics = {"a": 1, "b": None, "c": float("nan"), "d": True, "e": "x", "f": {"g": 2.5}}
    assert run_metrics(metrics) == {"a": 1.0, "f.g": 2.5}
    config = {"params": {"lr": 0.1, "name": "mlp", "sizes": [4, 2], "odd key(1)": 1}}
    assert run_params(config) == {"lr": "0.1", "name": "mlp", "sizes": "[4, 2]", "odd key_1_": "1"}


def test_the_default_store_is_sqlite_under_the_root(tmp_path: Path) -> None:
    assert tracking_uri(MlflowSettings(), tmp_path) == f"sqlite:///{tmp_path}/mlflow/mlflow.db"
    chosen = MlflowSettings(tracking_uri="http://mlflow:5000")
    assert tracking_uri(chosen, tmp_path) == "http://mlflow:5000"


def test_without_the_mlflow_extra_the_listener_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(MissingExtraError, match=r"retrainer\[mlflow\]"):
        open_night(tmp_path, "run-1")


def test_importing_the_listener_does_not_import_mlflow() -> None:
    code = "import sys, retrainer.job.mlflow_tracking; print('mlflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------- a real server on loopback


@dataclass
class MlflowServer:
    url: str
    pids: list[int]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"mlflow server not healthy within {within_s} s")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """`mlflow server` on 127.0.0.1 with a SQLite store; its job runner off (it would
    start a dozen huey consumers); stopped by its process group, every process dead."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port, log = _free_port(), folder / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"),
                *("--port", str(port), "--workers", "1"),
                *("--backend-store-uri", f"sqlite:///{folder}/mlflow.db"),
                *("--artifacts-destination", str(folder / "artifacts")),
            ],
            cwd=folder,
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log, within_s=60)
        pids = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
        yield MlflowServer(url, pids)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert_all_dead(pids)


def test_through_a_real_mlflow_server_the_alias_stays_with_the_better_model(
    tmp_path: Path, mlflow_server: MlflowServer
) -> None:
    first = open_night(tmp_path, "night-1", tracking_uri=mlflow_server.url, experiment="http")
    first.success("ADAUSDT", "20261123_020005Z", "first_model", net_sharpe=1.0)
    first.end()
    second = open_night(tmp_path, "night-2", tracking_uri=mlflow_server.url, experiment="http")
    second.success("ADAUSDT", "20261124_020005Z", "kept_champion", net_sharpe=0.1)
    second.end()

    client = MlflowClient(mlflow_server.url, mlflow_server.url)
    assert champion_version(client, "retrainer-ADAUSDT") == "1"
    version = client.get_model_version("retrainer-ADAUSDT", "2")
    assert version.tags["retrainer.decision"] == "kept_champion"
    assert version.run_id is not None
    logged = {f.path for f in client.list_artifacts(version.run_id)}
    assert {"model.bin", "config.json", "metrics.json", "sha256.txt"} <= logged
    assert not (tmp_path / "mlflow").exists()  # the server keeps the store, not the root


def test_two_real_nights_move_the_champion_alias_only_when_the_gate_promotes(
    tmp_path: Path, small_data: Path, run_cli: Any
) -> None:
    from tests.conftest import write_config

    def night(log_loss: float, *args: str) -> None:
        config = write_config(
            tmp_path / "mlflow-night.toml",
            {
                "run": {"root": str(tmp_path / "root"), "symbols": "BTCUSDT", "retries": 0},
                "data": {"path": str(small_data)},
                "trainer": {
                    "plugin": "tests.support.graded:graded",
                    "params": {"scores": {"BTCUSDT": {"test_log_loss": log_loss}}},
                },
                "mlflow": {"enabled": True},
            },
        )
        done = run_cli("run", "--config", str(config), *args)
        assert done.returncode == 0, done.stderr[-3000:]

    night(0.69)
    night(0.70, "--force")  # worse: the gate keeps the champion

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'root' / 'mlflow' / 'mlflow.db'}")
    versions = sorted(
        client.search_model_versions("name='retrainer-BTCUSDT'"), key=lambda v: int(v.version)
    )
    assert [v.tags.get("retrainer.decision") for v in versions] == ["first_model", "kept_champion"]
    champion = client.get_model_version_by_alias("retrainer-BTCUSDT", "champion")
    assert champion.version == versions[0].version


def test_a_search_logs_every_candidate_and_only_its_choice_carries_the_gate_s_decision(
    tmp_path: Path, small_data: Path, run_cli: Any
) -> None:
    from tests.conftest import TINY_TRAINER, write_config

    config = write_config(
        tmp_path / "mlflow-search.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": "BTCUSDT", "retries": 0},
            "data": {"path": str(small_data)},
            "trainer.params": TINY_TRAINER,
            "search": {"enabled": True, "space": {"learning_rate": [0.001, 0.01, 0.05]}},
            "mlflow": {"enabled": True},
        },
    )
    done = run_cli("run", "--config", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    (record_path,) = (tmp_path / "root" / "runs").glob("*/search/BTCUSDT.json")
    chosen = json.loads(record_path.read_text())["chosen_item"]
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'root' / 'mlflow' / 'mlflow.db'}")
    versions = client.search_model_versions("name='retrainer-BTCUSDT'")
    assert sorted(str(v.tags.get("retrainer.decision")) for v in versions) == [
        "first_model",
        "none",
        "none",
    ]
    champion = client.get_model_version_by_alias("retrainer-BTCUSDT", "champion")
    run = client.get_run(str(champion.run_id))
    assert run.data.tags["retrainer.item_id"] == chosen
