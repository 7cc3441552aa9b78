"""Plain HTTP for the webhook, the pings and the Pushgateway: one request, the retry
policy (a pure function) and the sender's retries, against our loopback server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from retrainer.notify.http import (
    RETRY_AFTER_CAP_S,
    HttpAnswer,
    HttpRequest,
    HttpSender,
    host_of,
    retry_delay_s,
    send_once,
)
from tests.support.http_server import RecordingServer
from tests.support.prometheus_tools import free_port


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    running = RecordingServer().start()
    yield running
    running.stop()


@pytest.mark.parametrize(
    ("answer", "attempt", "delay"),
    [
        (HttpAnswer(None), 0, 0.5),
        (HttpAnswer(None), 3, 4.0),
        (HttpAnswer(None), 10, 8.0),  # capped
        (HttpAnswer(500), 1, 1.0),
        (HttpAnswer(502), 0, 0.5),
        (HttpAnswer(408), 0, 0.5),
        (HttpAnswer(503, retry_after_s=7.0), 0, 7.0),
        (HttpAnswer(429, retry_after_s=2.0), 0, 2.0),
        (HttpAnswer(429), 2, 2.0),
        (HttpAnswer(429, retry_after_s=3600.0), 0, RETRY_AFTER_CAP_S),
        (HttpAnswer(400), 0, None),
        (HttpAnswer(401), 0, None),
        (HttpAnswer(404), 0, None),
        (HttpAnswer(501), 0, None),
    ],
)
def test_the_retry_policy_is_a_pure_function_of_the_answer_and_the_attempt(
    answer: HttpAnswer, attempt: int, delay: float | None
) -> None:
    assert retry_delay_s(answer, attempt) == delay


def test_a_url_is_logged_by_its_host_only() -> None:
    assert host_of("https://hooks.slack.com/services/T0/B0/SECRET") == "hooks.slack.com"
    assert host_of("http://127.0.0.1:9091/metrics/job/x") == "127.0.0.1:9091"
    assert host_of("not a url") == "?"


def test_one_request_reports_status_retry_after_and_a_short_answer(
    server: RecordingServer,
) -> None:
    server.script("429", "404")
    url = f"{server.url}/services/T0/B0/SECRET"

    limited = send_once(HttpRequest("POST", url, b"{}", {"X-A": "1"}), 5)
    missing = send_once(HttpRequest("POST", url, b"{}"), 5)
    ok = send_once(HttpRequest("GET", url), 5)

    assert (limited.status, limited.retry_after_s, limited.ok) == (429, 1.0, False)
    assert missing.status == 404 and "no_service" in missing.reason
    assert ok.ok and ok.status == 200
    assert all("SECRET" not in a.reason for a in (limited, missing, ok))
    assert server.requests[0].headers["x-a"] == "1" and server.requests[0].body == b"{}"


def test_no_answer_is_a_status_of_none_naming_the_host_only() -> None:
    url = f"http://127.0.0.1:{free_port()}/ping/SECRET-UUID"

    answer = send_once(HttpRequest("POST", url, b""), 2)

    assert answer.status is None and not answer.ok
    assert "127.0.0.1" in answer.reason and "SECRET" not in answer.reason


def test_a_hanging_server_is_given_up_on_at_the_timeout(server: RecordingServer) -> None:
    server.script("hang")
    began = time.monotonic()

    answer = send_once(HttpRequest("POST", server.url, b"x"), 0.5)

    assert answer.status is None and "timed out" in answer.reason
    assert time.monotonic() - began < 2


def test_the_sender_retries_a_500_and_a_429_then_succeeds(server: RecordingServer) -> None:
    server.script("500", "429")
    sender = HttpSender("test", timeout_s=5, max_retries=3, deadline=lambda: None)

    with capture_logs() as logs:
        assert sender.send("ping", HttpRequest("POST", server.url, b"x"))

    first, second, third = server.requests
    assert (first.answer, second.answer, third.answer) == ("500", "429", "ok")
    assert third.at - second.at >= 0.9  # the 429's Retry-After: 1
    assert [e["event"] for e in logs] == ["notify_retry", "notify_retry", "notify_sent"]
    assert (sender.sent, sender.failed) == (1, 0)


def test_a_refused_url_stops_every_later_request(server: RecordingServer) -> None:
    server.script("404")
    sender = HttpSender("test", timeout_s=5, max_retries=3, deadline=lambda: None)

    with capture_logs() as logs:
        assert not sender.send("first", HttpRequest("POST", server.url, b"x"))
        assert not sender.send("second", HttpRequest("POST", server.url, b"x"))

    assert len(server.requests) == 1
    assert "not sent: HTTP 404" in logs[-1]["reason"]
    assert (sender.sent, sender.failed) == (0, 2)


def test_past_the_deadline_nothing_starts_and_no_wait_runs_over_it(
    server: RecordingServer,
) -> None:
    server.script("500", "500", "500")
    deadline = time.monotonic() + 0.3
    sender = HttpSender("test", timeout_s=5, max_retries=10, deadline=lambda: deadline)
    began = time.monotonic()

    assert not sender.send("late", HttpRequest("POST", server.url, b"x"))

    assert time.monotonic() - began < 1.0
    assert len(server.requests) <= 2
