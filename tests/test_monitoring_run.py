"""The real `retrainer run` tells the monitoring operations teams run: a webhook, a
healthchecks-style dead man's switch and a Prometheus textfile, on good nights, bad nights
and nights that stop before they start, and never waits long for them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from retrainer.base.artifacts import Layout
from retrainer.base.clock import now_utc, run_day
from retrainer.base.lock import RunLock
from retrainer.notify.credentials import WEBHOOK_URL_ENV
from tests.conftest import RunCli, read_json, write_config
from tests.support.http_server import RecordingServer

UUID = "0f3c2a8e-5d1b-4e7a-8c9f-abcdefabcdef"


@pytest.fixture
def hooks() -> Iterator[RecordingServer]:
    server = RecordingServer().start()
    yield server
    server.stop()


@pytest.fixture
def pings() -> Iterator[RecordingServer]:
    server = RecordingServer().start()
    yield server
    server.stop()


def config_for(
    tmp_path: Path,
    small_data: Path,
    behaviours: dict[str, str],
    pings: RecordingServer,
    **sections: dict[str, Any],
) -> Path:
    return write_config(
        tmp_path / "monitoring.toml",
        {
            "run": {
                "root": str(tmp_path / "root"),
                "symbols": ",".join(behaviours),
                "retries": 0,
                "timeout_minutes": 10,
            },
            "data": {"path": str(small_data)},
            "trainer": {
                "plugin": "tests.support.plugins:faulty",
                "params": {"pid_dir": str(tmp_path / "pids"), "behaviours": behaviours},
            },
            "notify": {"kind": "webhook", "batch_window_s": 60, "close_timeout_s": 10},
            "healthchecks": {"ping_url": f"{pings.url}/ping/{UUID}", "close_timeout_s": 10},
            "prometheus": {"textfile": str(tmp_path / "collector" / "retrainer.prom")},
            **sections,
        },
    )


def metrics(tmp_path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = (tmp_path / "collector" / "retrainer.prom").read_text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def summary_of(tmp_path: Path) -> dict[str, Any]:
    day = run_day(now_utc())
    summary: dict[str, Any] = read_json(Layout(tmp_path / "root").summary_path(day))
    return summary


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def symbols_of(small_data: Path) -> list[str]:
    return sorted(p.stem for p in small_data.glob("*.parquet"))


def test_a_failed_night_reaches_the_webhook_the_dead_man_s_switch_and_the_textfile(
    tmp_path: Path,
    small_data: Path,
    hooks: RecordingServer,
    pings: RecordingServer,
    run_cli: RunCli,
) -> None:
    bad, good = symbols_of(small_data)[:2]
    config = config_for(tmp_path, small_data, {bad: "raise", good: "ok"}, pings)

    result = run_cli("run", "--config", str(config), env={WEBHOOK_URL_ENV: f"{hooks.url}/h"})

    assert result.returncode == 1, result.stderr
    started, alert, finished = (r.json() for r in hooks.wait_for(3))
    assert started["event"] == "run_started" and started["info"]["to_run"] == 2
    # One of two failed: half the symbols to train, escalated at once as on Telegram.
    assert alert["event"] == "failures" and "SYSTEMIC FAILURE? 1 of 2" in alert["text"]
    assert finished["event"] == "run_finished" and finished["exit_code"] == 1
    assert finished["failures"] == {bad: f"ValueError: boom from {bad}"}
    start, end = pings.wait_for(2)
    assert start.path == f"/ping/{UUID}/start" and end.path == f"/ping/{UUID}/fail"
    assert start.query["rid"] == end.query["rid"]
    assert end.text().startswith("exit code 1\n")
    assert f"• {bad}: failed: ValueError: boom from {bad}" in end.text()
    values = metrics(tmp_path)
    assert values[("retrainer_last_run_exit_code", ())] == 1
    assert values[("retrainer_last_run_items", (("state", "failed"),))] == 1
    assert values[("retrainer_last_run_items", (("state", "success"),))] == 1
    assert values[("retrainer_last_success_timestamp_seconds", ())] == 0
    assert values[("retrainer_model_age_seconds", (("symbol", good),))] < 600
    assert ("retrainer_model_age_seconds", (("symbol", bad),)) not in values


def test_a_good_night_pings_success_and_advances_the_success_time(
    tmp_path: Path, small_data: Path, pings: RecordingServer, run_cli: RunCli
) -> None:
    a = symbols_of(small_data)[0]
    config = config_for(tmp_path, small_data, {a: "ok"}, pings, notify={"kind": "null"})

    result = run_cli("run", "--config", str(config))

    assert result.returncode == 0, result.stderr
    _, end = pings.wait_for(2)
    assert end.path == f"/ping/{UUID}" and end.text().startswith("exit code 0\n")
    summary = summary_of(tmp_path)
    values = metrics(tmp_path)
    assert values[("retrainer_last_success_timestamp_seconds", ())] == epoch(summary["finished_at"])
    assert values[("retrainer_last_run_duration_seconds", ())] == pytest.approx(
        summary["total_wall_minutes"] * 60
    )


def test_a_night_that_stops_at_the_lock_pings_fail_and_updates_the_textfile(
    tmp_path: Path,
    small_data: Path,
    hooks: RecordingServer,
    pings: RecordingServer,
    run_cli: RunCli,
) -> None:
    a = symbols_of(small_data)[0]
    config = config_for(tmp_path, small_data, {a: "ok"}, pings)
    root = tmp_path / "root"
    root.mkdir()

    with RunLock(Layout(root).lock_path(), "another-run"):
        result = run_cli("run", "--config", str(config), env={WEBHOOK_URL_ENV: hooks.url})

    assert result.returncode == 3, result.stderr
    (end,) = pings.wait_for(1)
    assert end.path == f"/ping/{UUID}/fail"
    assert end.text().startswith("exit code 3\nreason: another retrainer run holds the lock")
    assert metrics(tmp_path)[("retrainer_last_run_exit_code", ())] == 3
    (finished,) = [r.json() for r in hooks.wait_for(1)]
    assert finished["event"] == "run_finished" and finished["exit_code"] == 3


def test_hanging_monitors_delay_the_night_by_at_most_their_close_timeouts(
    tmp_path: Path,
    small_data: Path,
    hooks: RecordingServer,
    pings: RecordingServer,
    run_cli: RunCli,
) -> None:
    hooks.script(then="hang")
    pings.script(then="hang")
    a = symbols_of(small_data)[0]
    config = config_for(
        tmp_path,
        small_data,
        {a: "ok"},
        pings,
        notify={"kind": "webhook", "request_timeout_s": 60, "close_timeout_s": 2},
        healthchecks={
            "ping_url": f"{pings.url}/ping/{UUID}",
            "request_timeout_s": 60,
            "close_timeout_s": 2,
        },
    )

    result = run_cli("run", "--config", str(config), env={WEBHOOK_URL_ENV: hooks.url})
    ended = time.time()

    assert result.returncode == 0, result.stderr
    # From the summary's end to the process's: the two closes at once (2 s), and exiting.
    assert ended - epoch(summary_of(tmp_path)["finished_at"]) < 2 + 6
    assert metrics(tmp_path)[("retrainer_last_run_exit_code", ())] == 0  # the textfile too


def test_monitoring_config_is_checked_and_a_secret_header_is_refused_without_its_value(
    tmp_path: Path, run_cli: RunCli
) -> None:
    unknown = write_config(tmp_path / "a.toml", {"prometheus": {"textfle": "x.prom"}})
    not_prom = write_config(tmp_path / "b.toml", {"prometheus": {"textfile": "x.txt"}})
    secret = write_config(
        tmp_path / "c.toml",
        {"notify": {"kind": "webhook", "headers": {"Authorization": "Bearer hush-hush-42"}}},
    )
    bad_ping = write_config(tmp_path / "d.toml", {"healthchecks": {"ping_url": "hc-ping.com/x"}})

    results = {
        name: run_cli("run", "--config", str(p))
        for name, p in (
            ("unknown", unknown),
            ("not_prom", not_prom),
            ("secret", secret),
            ("bad_ping", bad_ping),
        )
    }

    assert {name: r.returncode for name, r in results.items()} == dict.fromkeys(results, 2)
    assert "prometheus.textfle: unknown key" in results["unknown"].stderr
    assert "reads only *.prom files" in results["not_prom"].stderr
    assert "RETRAINER_WEBHOOK_HEADER_AUTHORIZATION" in results["secret"].stderr
    assert "hush-hush" not in results["secret"].stderr + results["secret"].stdout
    assert "healthchecks.ping_url" in results["bad_ping"].stderr
