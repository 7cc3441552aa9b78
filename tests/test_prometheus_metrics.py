"""The Prometheus exporter: the textfile node_exporter reads and the Pushgateway pushes,
checked with prometheus_client's own parser, Debian's real node_exporter and Pushgateway
(when installed: `make test-tools`), and our loopback server speaking the push protocol."""

from __future__ import annotations

import base64
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from retrainer.base.config import PrometheusSettings, Settings
from retrainer.notify.credentials import PUSHGATEWAY_PASSWORD_ENV, PUSHGATEWAY_USERNAME_ENV
from retrainer.notify.fanout import FanOut
from retrainer.notify.prometheus import PrometheusExporter, latest_model_time
from retrainer.notify.registry import observers_for_run
from tests.support.http_server import RecordingServer
from tests.support.prometheus_tools import (
    NODE_EXPORTER,
    PUSHGATEWAY,
    NodeExporter,
    Pushgateway,
    installed,
)

T0 = 1_795_000_000.0  # 2026-11-18T…Z
DAY = 86_400.0


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(epoch))


def stamp(epoch: float) -> str:
    return time.strftime("%Y%m%d_%H%M%SZ", time.gmtime(epoch))


def make_model(root: Path, symbol: str, made: float, ok: bool = True, suffix: str = "") -> Path:
    folder = root / "models" / symbol / (stamp(made) + suffix)
    folder.mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"m")
    if ok:
        (folder / "sha256.txt").write_text("0" * 64 + "  model.bin\n")
    return folder


def summary(
    exit_code: int, finished: float, states: dict[str, str], **extra: Any
) -> dict[str, Any]:
    return {
        "run_id": f"{stamp(finished)}-4242",
        "host": "trainer-1",
        "day": stamp(finished)[:8] + "Z",
        "started_at": iso(finished - 600),
        "finished_at": iso(finished),
        "exit_code": exit_code,
        "total_wall_minutes": 10.0,
        "by_symbol": {s: {"status": st} for s, st in states.items()},
        **extra,
    }


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """name and sorted labels → value, for every sample of an exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def export(
    settings: PrometheusSettings, root: Path, done: dict[str, Any], started: bool = True
) -> None:
    exporter = PrometheusExporter(settings, root, environ={})
    if started:
        exporter.run_started({"run_id": done["run_id"]})
    exporter.run_finished(done)
    exporter.close()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    folder.mkdir()
    return folder


@pytest.fixture
def textfile(tmp_path: Path) -> Path:
    return tmp_path / "collector" / "retrainer.prom"


def test_a_failed_run_writes_exit_code_duration_counts_by_state_and_model_ages(
    root: Path, textfile: Path
) -> None:
    make_model(root, "BTCUSDT", T0 - 3 * DAY)
    make_model(root, "BTCUSDT", T0 - 600)  # tonight's
    make_model(root, "ETHUSDT", T0 - 2 * DAY)
    make_model(root, "ETHUSDT", T0 - 500, ok=False)  # tonight's failed attempt: no manifest
    done = summary(1, T0, {"BTCUSDT": "success", "ETHUSDT": "failed", "SOLUSDT": "timeout"})

    export(PrometheusSettings(textfile=textfile), root, done)

    metrics = parse(textfile.read_text())
    assert metrics[("retrainer_last_run_exit_code", ())] == 1
    assert metrics[("retrainer_last_run_duration_seconds", ())] == 600
    assert metrics[("retrainer_last_run_finished_timestamp_seconds", ())] == T0
    items = {
        dict(k[1])["state"]: v for k, v in metrics.items() if k[0] == "retrainer_last_run_items"
    }
    assert items["success"] == 1 and items["failed"] == 1 and items["timeout"] == 1
    assert items["skipped"] == 0 and items["interrupted"] == 0  # every state, 0 too
    age = {
        dict(k[1])["symbol"]: v for k, v in metrics.items() if k[0] == "retrainer_model_age_seconds"
    }
    assert age == {"BTCUSDT": 600, "ETHUSDT": 2 * DAY}  # SOLUSDT has no model at all
    trained = ("retrainer_model_trained_timestamp_seconds", (("symbol", "ETHUSDT"),))
    assert metrics[trained] == T0 - 2 * DAY
    # No run has succeeded yet: 0, so that an alert on its age fires.
    assert metrics[("retrainer_last_success_timestamp_seconds", ())] == 0


def test_the_success_time_moves_only_when_a_run_succeeds(root: Path, textfile: Path) -> None:
    settings = PrometheusSettings(textfile=textfile)
    export(settings, root, summary(0, T0, {"BTCUSDT": "success"}))
    assert parse(textfile.read_text())[("retrainer_last_success_timestamp_seconds", ())] == T0

    export(settings, root, summary(1, T0 + DAY, {"BTCUSDT": "failed"}))
    after_failure = parse(textfile.read_text())
    assert after_failure[("retrainer_last_success_timestamp_seconds", ())] == T0
    assert after_failure[("retrainer_last_run_exit_code", ())] == 1

    export(settings, root, summary(0, T0 + 2 * DAY, {"BTCUSDT": "success"}))
    assert parse(textfile.read_text())[("retrainer_last_success_timestamp_seconds", ())] == (
        T0 + 2 * DAY
    )


def test_without_a_previous_textfile_the_success_time_comes_from_the_newest_good_summary(
    root: Path, textfile: Path
) -> None:
    for day, code in ((T0 - 2 * DAY, 0), (T0 - DAY, 1)):
        path = root / "summary" / (stamp(day)[:8] + "Z") / "engine_summary.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(summary(code, day, {})))

    export(PrometheusSettings(textfile=textfile), root, summary(2, T0, {}))

    assert parse(textfile.read_text())[("retrainer_last_success_timestamp_seconds", ())] == (
        T0 - 2 * DAY
    )


def test_a_night_that_stopped_before_it_started_keeps_the_symbols_exported_before(
    root: Path, textfile: Path
) -> None:
    settings = PrometheusSettings(textfile=textfile)
    make_model(root, "BTCUSDT", T0 - DAY)
    export(settings, root, summary(0, T0, {"BTCUSDT": "success"}))
    # The next night stops at the lock (exit 3): a small summary, no items, no run_started.
    stopped = {
        "run_id": "x",
        "started": False,
        "exit_code": 3,
        "reason": "another retrainer run holds the lock",
        "started_at": iso(T0 + DAY),
        "finished_at": iso(T0 + DAY + 2),
        "by_symbol": {},
    }
    export(settings, root, stopped, started=False)

    metrics = parse(textfile.read_text())
    assert metrics[("retrainer_last_run_exit_code", ())] == 3
    assert metrics[("retrainer_last_run_duration_seconds", ())] == 2
    assert metrics[("retrainer_last_success_timestamp_seconds", ())] == T0
    assert metrics[("retrainer_model_age_seconds", (("symbol", "BTCUSDT"),))] == 2 * DAY + 2


def test_the_latest_model_is_the_newest_attempt_folder_with_a_manifest(root: Path) -> None:
    make_model(root, "BTCUSDT", T0 - DAY)
    make_model(root, "BTCUSDT", T0, suffix="-1")  # a retry in the same second, succeeded
    make_model(root, "BTCUSDT", T0 + 5, ok=False)
    (root / "models" / "BTCUSDT" / "CHAMPION").write_text("x")

    assert latest_model_time(root, "BTCUSDT") == T0
    assert latest_model_time(root, "NOPE") is None


def test_the_textfile_is_replaced_atomically_with_the_umask_s_mode_and_no_temp_file_left(
    root: Path, textfile: Path
) -> None:
    textfile.parent.mkdir(parents=True)
    textfile.write_text("# an older file\n")
    export(PrometheusSettings(textfile=textfile), root, summary(0, T0, {}))

    assert [p.name for p in textfile.parent.iterdir()] == ["retrainer.prom"]
    assert textfile.stat().st_mode & 0o777 == 0o644  # pytest runs under umask 022
    assert "retrainer_last_run_exit_code 0.0" in textfile.read_text()


def test_a_textfile_that_cannot_be_written_is_logged_and_the_push_still_goes(
    root: Path, tmp_path: Path
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    server = RecordingServer().start()
    try:
        settings = PrometheusSettings(
            textfile=blocker / "retrainer.prom", pushgateway_url=server.url, instance="box"
        )
        with capture_logs() as logs:
            export(settings, root, summary(0, T0, {}))
        assert len(server.wait_for(1)) == 1
    finally:
        server.stop()
    (failure,) = [e for e in logs if e["event"] == "notify_failed"]
    assert failure["what"] == "textfile" and failure["notifier"] == "prometheus"


# ---------------------------------------------------------------------------- the push


@pytest.fixture
def gateway() -> Iterator[RecordingServer]:
    server = RecordingServer().start()
    yield server
    server.stop()


def test_a_success_is_put_whole_and_a_failure_posted_without_the_success_time(
    root: Path, gateway: RecordingServer
) -> None:
    settings = PrometheusSettings(pushgateway_url=gateway.url, instance="trainer-1", job="nightly")
    export(settings, root, summary(0, T0, {"BTCUSDT": "success"}))
    export(settings, root, summary(1, T0 + DAY, {"BTCUSDT": "failed"}))

    put, post = gateway.wait_for(2)
    assert (put.method, put.path) == ("PUT", "/metrics/job/nightly/instance/trainer-1")
    assert (post.method, post.path) == ("POST", "/metrics/job/nightly/instance/trainer-1")
    assert put.headers["content-type"].startswith("text/plain; version=0.0.4")
    pushed, posted = parse(put.text()), parse(post.text())
    assert pushed[("retrainer_last_success_timestamp_seconds", ())] == T0
    assert ("retrainer_last_success_timestamp_seconds", ()) not in posted
    assert posted[("retrainer_last_run_exit_code", ())] == 1


def test_the_push_uses_basic_auth_from_the_environment_and_is_retried_after_a_500(
    root: Path, gateway: RecordingServer
) -> None:
    gateway.script("500")
    settings = PrometheusSettings(pushgateway_url=gateway.url, instance="box")
    env = {PUSHGATEWAY_USERNAME_ENV: "pusher", PUSHGATEWAY_PASSWORD_ENV: "s3cr3t-pw"}
    exporter = PrometheusExporter(settings, root, environ=env)
    with capture_logs() as logs:
        exporter.run_finished(summary(0, T0, {}))
        exporter.close()

    failed, ok = gateway.requests
    assert (failed.answer, ok.answer) == ("500", "ok")
    expected = "Basic " + base64.b64encode(b"pusher:s3cr3t-pw").decode()
    assert ok.headers["authorization"] == expected
    assert [e["event"] for e in logs if e["event"].startswith("notify_")] == [
        "notify_retry",
        "notify_sent",
        "notify_closed",
    ]
    assert "s3cr3t" not in repr(logs)


def test_a_hanging_pushgateway_delays_close_by_at_most_its_close_timeout(
    root: Path, gateway: RecordingServer, textfile: Path
) -> None:
    gateway.script(then="hang")
    settings = PrometheusSettings(
        textfile=textfile, pushgateway_url=gateway.url, request_timeout_s=30, close_timeout_s=1
    )
    exporter = PrometheusExporter(settings, root, environ={})
    began = time.monotonic()
    exporter.run_finished(summary(1, T0, {}))
    assert time.monotonic() - began < 0.1  # the run never waits for the exporter
    while not textfile.exists():
        time.sleep(0.01)
    exporter.close()

    assert time.monotonic() - began < 3
    assert parse(textfile.read_text())[("retrainer_last_run_exit_code", ())] == 1


@pytest.mark.skipif(not installed(PUSHGATEWAY), reason=f"{PUSHGATEWAY} not installed")
def test_debian_s_pushgateway_keeps_the_last_success_time_across_a_failed_run(
    root: Path,
) -> None:
    make_model(root, "BTCUSDT", T0 - 600)
    make_model(root, "ETHUSDT", T0 - 700)
    with Pushgateway.started() as real:
        settings = PrometheusSettings(pushgateway_url=real.url, instance="trainer-1")
        export(settings, root, summary(0, T0, {"BTCUSDT": "success", "ETHUSDT": "success"}))
        export(settings, root, summary(1, T0 + DAY, {"BTCUSDT": "failed"}))
        samples = real.samples()

    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
    group = (("instance", "trainer-1"), ("job", "retrainer"))
    assert values[("retrainer_last_run_exit_code", group)] == 1
    assert values[("retrainer_last_success_timestamp_seconds", group)] == T0
    ages = {dict(k[1])["symbol"] for k in values if k[0] == "retrainer_model_age_seconds"}
    assert ages == {"BTCUSDT"}  # the POST replaced the whole family: ETHUSDT is gone


@pytest.mark.skipif(not installed(NODE_EXPORTER), reason=f"{NODE_EXPORTER} not installed")
def test_debian_s_node_exporter_reads_the_textfile_without_error(
    root: Path, textfile: Path
) -> None:
    make_model(root, "BTCUSDT", T0 - 600)
    export(PrometheusSettings(textfile=textfile), root, summary(1, T0, {"BTCUSDT": "failed"}))

    with NodeExporter.started(textfile.parent) as node:
        samples = node.samples("")

    values = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}
    assert values[("node_textfile_scrape_error", ())] == 0
    assert values[("retrainer_last_run_exit_code", ())] == 1
    assert values[("retrainer_model_age_seconds", (("symbol", "BTCUSDT"),))] == 600


# ---------------------------------------------------------------------------- wiring


def test_observers_for_run_adds_the_exporter_only_when_a_textfile_or_gateway_is_set(
    textfile: Path,
) -> None:
    plain = observers_for_run(Settings())
    with_metrics = observers_for_run(Settings(prometheus=PrometheusSettings(textfile=textfile)))
    try:
        assert isinstance(plain, FanOut) and isinstance(with_metrics, FanOut)
        assert [name for name, _ in plain.observers] == ["notify"]
        assert [name for name, _ in with_metrics.observers] == ["notify", "prometheus"]
    finally:
        plain.close()
        with_metrics.close()


def test_without_prometheus_client_the_exporter_is_left_out_naming_the_extra(
    textfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)

    with capture_logs() as logs:
        observers = observers_for_run(Settings(prometheus=PrometheusSettings(textfile=textfile)))
    observers.close()

    assert isinstance(observers, FanOut)
    assert [name for name, _ in observers.observers] == ["notify"]
    (failure,) = [e for e in logs if e["event"] == "notify_failed"]
    assert "pip install 'retrainer[prometheus]'" in failure["reason"]
