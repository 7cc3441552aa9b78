"""The webhook notifier: Telegram's messages as JSON POSTs (or Slack's payload) to our
loopback server, with the same never-delay-the-run guarantees."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from retrainer.base.config import NotifySettings
from retrainer.base.errors import BadInputError
from retrainer.notify import NullNotifier, notifier_for_run
from retrainer.notify.credentials import WEBHOOK_URL_ENV
from retrainer.notify.messages import finished_text, started_text
from retrainer.notify.webhook import WebhookNotifier, slack_escape
from tests.support.http_server import RecordingServer

STARTED = {
    "run_id": "20261123_020000Z-9",
    "host": "box",
    "mode": "hybrid",
    "driver": "local",
    "symbols": 4,
    "to_run": 4,
    "to_skip": 0,
    "window": 2,
    "threads_per_item": 1,
    "resources": {"cpus": 8},
}


def finished(exit_code: int, failures: dict[str, str]) -> dict[str, Any]:
    return {
        "run_id": "20261123_020000Z-9",
        "host": "box",
        "day": "20261123Z",
        "exit_code": exit_code,
        "total_symbols": 4,
        "succeeded": 4 - len(failures),
        "failed": len(failures),
        "timed_out": 0,
        "skipped": 0,
        "interrupted": 0,
        "total_wall_minutes": 3.5,
        "failures": failures,
        "by_symbol": {
            **{s: {"status": "failed", "reason": r} for s, r in failures.items()},
            "BTCUSDT": {"status": "success", "minutes": 1.0, "metrics": {"net_sharpe": 1.5}},
        },
    }


@pytest.fixture
def server() -> Iterator[RecordingServer]:
    running = RecordingServer().start()
    yield running
    running.stop()


def webhook(url: str | None, env: dict[str, str] | None = None, **options: Any) -> WebhookNotifier:
    settings = {"kind": "webhook", "request_timeout_s": 2, "close_timeout_s": 5, **options}
    if url is not None:
        settings["url"] = url
    return WebhookNotifier(settings, env or {})


def test_a_run_is_posted_as_json_started_failures_and_finished(server: RecordingServer) -> None:
    notifier = webhook(server.url, batch_window_s=60, headers={"X-Source": "retrainer"})
    notifier.run_started(STARTED)
    notifier.item_failed("ETHUSDT", "ValueError: boom")
    notifier.run_finished(finished(1, {"ETHUSDT": "ValueError: boom"}))
    notifier.close()

    started, done = server.wait_for(2)  # the pending failure is folded into "finished"
    assert started.method == "POST"
    assert started.headers["content-type"] == "application/json; charset=utf-8"
    assert started.headers["x-source"] == "retrainer"
    assert started.json() == {
        "source": "retrainer",
        "event": "run_started",
        "text": started_text(STARTED),
        "run_id": STARTED["run_id"],
        "host": "box",
        "info": {k: v for k, v in STARTED.items() if k != "resources"},
    }
    body = done.json()
    assert body["event"] == "run_finished" and body["exit_code"] == 1
    assert body["text"] == finished_text(finished(1, {"ETHUSDT": "ValueError: boom"}))
    assert body["counts"]["failed"] == 1 and body["failures"] == {"ETHUSDT": "ValueError: boom"}


def test_failures_are_batched_and_escalated_like_telegram_s(server: RecordingServer) -> None:
    notifier = webhook(server.url, batch_window_s=0.3, escalate_share=0.5)
    notifier.run_started(STARTED)
    notifier.item_failed("ETHUSDT", "exited with code 3")
    server.wait_for(2)  # the window closed: one batch of one
    notifier.item_failed("SOLUSDT", "timed out after 45 min")  # 2 of 4: escalated at once
    server.wait_for(3)
    notifier.close()

    _, batch, escalated = (r.json() for r in server.answered())
    assert batch["event"] == "failures" and "• ETHUSDT: exited with code 3" in batch["text"]
    assert escalated["text"].startswith("🚨 retrainer: SYSTEMIC FAILURE? 2 of 4")


def test_the_slack_format_is_plain_text_escaped_and_split_at_line_ends(
    server: RecordingServer,
) -> None:
    long_reason = "x" * 120
    failures = {f"S{n:03d}": f"<{long_reason}> & more" for n in range(45)}
    notifier = webhook(server.url, format="slack")
    notifier.run_finished(finished(1, failures))
    notifier.close()

    parts = [r.json() for r in server.wait_for(2)]
    assert all(set(p) == {"text", "mrkdwn"} and p["mrkdwn"] is False for p in parts)
    assert all(len(p["text"]) <= 4000 for p in parts)
    joined = "\n".join(p["text"] for p in parts)
    assert "&lt;xxx" in joined and "&gt; &amp; more" in joined and "<" not in joined
    assert slack_escape("a<b>&c") == "a&lt;b&gt;&amp;c"


def test_a_429_waits_for_retry_after_and_a_500_is_retried(server: RecordingServer) -> None:
    server.script("429", "500")
    notifier = webhook(server.url)
    notifier.run_started(STARTED)
    notifier.close()

    limited, failed, ok = server.requests
    assert (limited.answer, failed.answer, ok.answer) == ("429", "500", "ok")
    assert failed.at - limited.at >= 0.9
    assert ok.json()["event"] == "run_started"


def test_a_hanging_receiver_never_delays_the_calls_and_close_is_bounded(
    server: RecordingServer,
) -> None:
    server.script(then="hang")
    notifier = webhook(server.url, request_timeout_s=30, close_timeout_s=1)
    began = time.monotonic()
    notifier.run_started(STARTED)
    notifier.item_failed("ETHUSDT", "boom")
    notifier.run_finished(finished(1, {"ETHUSDT": "boom"}))
    assert time.monotonic() - began < 0.1

    with capture_logs() as logs:
        notifier.close()

    assert time.monotonic() - began < 3
    assert any(e["event"] == "notify_failed" for e in logs)


def test_a_refused_url_stops_further_posts(server: RecordingServer) -> None:
    server.script("404")
    notifier = webhook(server.url)
    notifier.run_started(STARTED)
    notifier.run_finished(finished(0, {}))
    notifier.close()

    assert len(server.requests) == 1


def test_the_url_and_secret_headers_come_from_the_environment_and_are_never_logged(
    server: RecordingServer, tmp_path: Path
) -> None:
    secret_url = f"{server.url}/services/T000/B000/XXXXSECRETXXXX"
    secrets = tmp_path / "webhook.env"
    secrets.write_text('RETRAINER_WEBHOOK_HEADER_AUTHORIZATION="Bearer file-secret-123"\n')
    with capture_logs() as logs:
        notifier = webhook(
            None, {WEBHOOK_URL_ENV: secret_url}, secrets_file=str(secrets), format="slack"
        )
        notifier.run_started(STARTED)
        notifier.close()

    (request,) = server.wait_for(1)
    assert request.path == "/services/T000/B000/XXXXSECRETXXXX"
    assert request.headers["authorization"] == "Bearer file-secret-123"
    assert "SECRET" not in repr(logs) and "file-secret" not in repr(logs)


def test_without_a_url_the_webhook_is_bad_input_and_the_run_gets_the_null_notifier() -> None:
    with pytest.raises(BadInputError, match="RETRAINER_WEBHOOK_URL"):
        webhook(None)
    with capture_logs() as logs:
        chosen = notifier_for_run(NotifySettings(kind="webhook"))
    assert isinstance(chosen, NullNotifier)
    assert logs[0]["event"] == "notify_failed" and logs[0]["kind"] == "webhook"


def test_a_header_that_holds_a_secret_cannot_be_set_in_the_config() -> None:
    with pytest.raises(ValueError, match="RETRAINER_WEBHOOK_HEADER_X_API_KEY"):
        NotifySettings(kind="webhook", headers={"X-Api-Key": "k"})
