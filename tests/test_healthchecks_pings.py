"""Dead man's switch pings, healthchecks.io style, against our loopback ping server;
and the fan-out that tells every observer, whatever one of them does."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from retrainer.base.config import HealthchecksSettings, Settings
from retrainer.notify.credentials import PING_URL_ENV
from retrainer.notify.fanout import FanOut
from retrainer.notify.healthchecks import (
    BODY_BYTES,
    HealthchecksPinger,
    end_body,
    ping_url,
    signal_url,
)
from retrainer.notify.registry import observers_for_run
from tests.support.http_server import RecordingServer

UUID = "5b1f5e6a-3c1d-4f6e-9a55-1234567890ab"


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    running = RecordingServer().start()
    yield running
    running.stop()


def finished(exit_code: int, **extra: Any) -> dict[str, Any]:
    failures = {"ETHUSDT": "ValueError: boom"} if exit_code else {}
    return {
        "run_id": "r-1",
        "host": "box",
        "exit_code": exit_code,
        "total_symbols": 2,
        "succeeded": 2 - len(failures),
        "failed": len(failures),
        "total_wall_minutes": 2.0,
        "failures": failures,
        "by_symbol": {s: {"status": "failed", "reason": r} for s, r in failures.items()},
        **extra,
    }


def pinger(server: RecordingServer, **options: Any) -> HealthchecksPinger:
    settings = HealthchecksSettings(
        **{"request_timeout_s": 2, "close_timeout_s": 5, "max_retries": 3, **options}
    )
    return HealthchecksPinger(settings, f"{server.url}/ping/{UUID}")


def test_a_good_night_pings_start_then_success_with_one_run_id(server: RecordingServer) -> None:
    hc = pinger(server)
    hc.run_started({"run_id": "r-1", "host": "box", "symbols": 2})
    hc.item_failed("ETHUSDT", "boom")  # a failure is no ping: the end says how it went
    hc.run_finished(finished(0))
    hc.close()

    start, end = server.wait_for(2)
    assert (start.method, start.path) == ("POST", f"/ping/{UUID}/start")
    assert (end.method, end.path) == ("POST", f"/ping/{UUID}")
    assert start.query["rid"] == end.query["rid"] == hc.rid
    assert end.text().startswith("exit code 0\n✅ retrainer: run finished on box (exit 0)")


def test_a_failed_night_pings_fail_with_the_exit_code_and_the_summary_s_last_lines(
    server: RecordingServer,
) -> None:
    hc = pinger(server)
    hc.run_started({"run_id": "r-1"})
    hc.run_finished(finished(1))
    hc.close()

    _, end = server.wait_for(2)
    assert end.path == f"/ping/{UUID}/fail"
    body = end.text()
    assert body.startswith("exit code 1\n")
    assert body.rstrip().endswith("• ETHUSDT: failed: ValueError: boom")
    assert end.headers["content-type"] == "text/plain; charset=utf-8"


def test_a_night_that_stopped_before_it_started_pings_fail_with_its_reason(
    server: RecordingServer,
) -> None:
    hc = pinger(server)
    hc.run_finished(
        {"exit_code": 3, "reason": "another retrainer run holds the lock", "by_symbol": {}}
    )
    hc.close()

    (end,) = server.wait_for(1)
    assert end.path == f"/ping/{UUID}/fail"
    assert end.text().startswith("exit code 3\nreason: another retrainer run holds the lock\n")


def test_a_500_is_retried_and_a_hanging_monitor_delays_close_by_at_most_its_timeout(
    server: RecordingServer,
) -> None:
    server.script("500", then="hang")
    hc = pinger(server, request_timeout_s=30, close_timeout_s=1)
    began = time.monotonic()
    hc.run_started({"run_id": "r-1"})
    hc.run_finished(finished(1))
    assert time.monotonic() - began < 0.1  # the run never waits for a ping

    with capture_logs() as logs:
        hc.close()

    assert time.monotonic() - began < 3
    assert [r.answer for r in server.requests][:2] == ["500", "hang"]
    assert any(e["event"] == "notify_failed" for e in logs)


def test_the_body_keeps_the_head_and_the_last_lines_within_what_the_monitor_keeps() -> None:
    many = {f"S{n:04d}": "r" * 280 for n in range(45)}
    summary = finished(1) | {
        "failures": many,
        "by_symbol": {s: {"status": "failed", "reason": r} for s, r in many.items()},
    }

    body = end_body(summary, lines=30)

    lines = body.splitlines()
    assert lines[0] == "exit code 1" and len(lines) <= 31
    assert lines[-1].startswith("… and") or lines[-1].startswith("• S0044")
    assert len(body.encode()) <= BODY_BYTES


def test_the_signal_url_keeps_the_ping_url_s_query_and_adds_the_run_id() -> None:
    url = signal_url("https://hc-ping.com/key/slug?create=1", "fail", "rid-1")
    assert url == "https://hc-ping.com/key/slug/fail?create=1&rid=rid-1"
    assert signal_url("https://hc-ping.com/uuid/", "", "r") == "https://hc-ping.com/uuid?rid=r"


def test_the_ping_url_may_come_from_the_environment_or_a_secrets_file(tmp_path: Path) -> None:
    secrets = tmp_path / "monitoring.env"
    secrets.write_text(f"{PING_URL_ENV}=https://hc.example/ping/from-file\n")

    assert ping_url(HealthchecksSettings()) is None
    assert ping_url(HealthchecksSettings(ping_url="https://a/b")) == "https://a/b"
    assert (
        ping_url(HealthchecksSettings(secrets_file=secrets)) == "https://hc.example/ping/from-file"
    )
    env = {PING_URL_ENV: "https://hc.example/ping/from-env"}
    assert ping_url(HealthchecksSettings(secrets_file=secrets), env) == (
        "https://hc.example/ping/from-env"
    )


# ---------------------------------------------------------------------------- fan-out


class Recording:
    def __init__(self, fail: bool = False, close_s: float = 0.0) -> None:
        self.calls: list[str] = []
        self.fail, self.close_s = fail, close_s

    def _call(self, what: str) -> None:
        self.calls.append(what)
        if self.fail:
            raise RuntimeError(f"{what} broke")

    def run_started(self, info: Mapping[str, Any]) -> None:
        self._call("run_started")

    def item_failed(self, symbol: str, reason: str) -> None:
        self._call("item_failed")

    def run_finished(self, summary: Mapping[str, Any]) -> None:
        self._call("run_finished")

    def close(self) -> None:
        time.sleep(self.close_s)
        self._call("close")


def test_one_observer_raising_never_keeps_a_call_from_the_others() -> None:
    broken, fine = Recording(fail=True), Recording()
    fan = FanOut([("broken", broken), ("fine", fine)], close_bound_s=1)

    with capture_logs() as logs:
        fan.run_started({})
        fan.item_failed("X", "r")
        fan.run_finished({})
        fan.close()

    expected = ["run_started", "item_failed", "run_finished", "close"]
    assert broken.calls == fine.calls == expected
    assert [(e["notifier"], e["what"]) for e in logs if e["event"] == "notify_failed"] == [
        ("broken", w) for w in expected
    ]


def test_observers_close_together_so_the_run_waits_for_the_slowest_not_the_sum() -> None:
    fan = FanOut([(f"o{n}", Recording(close_s=0.5)) for n in range(4)], close_bound_s=1)
    began = time.monotonic()

    fan.close()

    assert time.monotonic() - began < 1.2


def test_an_observer_whose_close_hangs_is_left_behind_past_the_bound() -> None:
    observers = [("stuck", Recording(close_s=30)), ("fine", Recording())]
    fan = FanOut(observers, close_bound_s=0.2, grace_s=0.3)
    began = time.monotonic()

    with capture_logs() as logs:
        fan.close()

    assert time.monotonic() - began < 1.5
    assert any(e.get("notifier") == "stuck" and e["what"] == "close" for e in logs)


def test_observers_for_run_tells_notify_healthchecks_and_prometheus(
    server: RecordingServer, tmp_path: Path
) -> None:
    settings = Settings.model_validate(
        {
            "run": {"root": str(tmp_path / "root")},
            "healthchecks": {"ping_url": f"{server.url}/ping/{UUID}"},
            "prometheus": {"textfile": str(tmp_path / "m.prom")},
        }
    )

    observers = observers_for_run(settings)
    assert isinstance(observers, FanOut)
    assert [name for name, _ in observers.observers] == ["notify", "healthchecks", "prometheus"]
    observers.run_finished({"exit_code": 2, "reason": "bad input", "by_symbol": {}})
    observers.close()

    (end,) = server.wait_for(1)
    assert end.path == f"/ping/{UUID}/fail"
    assert "retrainer_last_run_exit_code 2.0" in (tmp_path / "m.prom").read_text()
