"""The Telegram notifier: the real python-telegram-bot client against our Bot API server."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from retrainer.base.config import NotifySettings
from retrainer.notify import Notifier, NullNotifier, notifier_for_run
from retrainer.notify.credentials import CHAT_ID_ENV, TOKEN_ENV
from retrainer.notify.messages import MESSAGE_LIMIT, utf16_len
from retrainer.notify.telegram import TelegramNotifier
from tests.support.telegram_server import FakeBotApi

TOKEN = "987654321:AAHsecretSecretSecretSecretSecret12"
ENV = {TOKEN_ENV: TOKEN, CHAT_ID_ENV: "-100123"}
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
}


@pytest.fixture
def bot_api() -> Iterator[FakeBotApi]:
    server = FakeBotApi().start()
    yield server
    server.stop()


def _notifier(api: FakeBotApi | str, **options: Any) -> TelegramNotifier:
    url = api if isinstance(api, str) else api.api_url
    return TelegramNotifier(
        {
            "kind": "telegram",
            "api_url": url,
            "request_timeout_s": 2,
            "close_timeout_s": 20,  # generous on a busy machine; bounded-close tests set theirs
            **options,
        },
        ENV,
    )


def _summary(failures: dict[str, str]) -> dict[str, Any]:
    by_symbol = {s: {"status": "failed", "reason": r} for s, r in failures.items()}
    return {
        "run_id": STARTED["run_id"],
        "day": "20261123Z",
        "exit_code": 1 if failures else 0,
        "total_symbols": len(failures),
        "failed": len(failures),
        "by_symbol": by_symbol,
        "failures": failures,
    }


def test_the_telegram_notifier_is_a_notifier_and_sends_each_message_to_the_chat(
    bot_api: FakeBotApi,
) -> None:
    notifier = _notifier(bot_api, batch_window_s=0.2)
    assert isinstance(notifier, Notifier)

    notifier.run_started(STARTED)
    notifier.item_failed("AAA", "ValueError: boom from AAA")
    bot_api.wait_for(2)
    notifier.run_finished(_summary({"AAA": "ValueError: boom from AAA"}))
    notifier.close()

    texts = bot_api.texts()
    assert len(texts) == 3
    assert texts[0].startswith("▶️ retrainer: run started on box")
    assert texts[1].startswith("❌ retrainer: 1 symbol failed") and "AAA: ValueError" in texts[1]
    assert texts[2].startswith("❌ retrainer: run finished on ?")
    assert {r.token for r in bot_api.requests} == {TOKEN}
    assert {r.fields["chat_id"] for r in bot_api.requests} == {"-100123"}


def test_the_summary_json_is_attached_as_a_document(bot_api: FakeBotApi) -> None:
    notifier = _notifier(bot_api)
    summary = _summary({"AAA": "boom"})

    notifier.run_finished(summary)
    notifier.close()

    (document,) = bot_api.of("sendDocument")
    filename, body = document.files["document"]
    assert filename == "engine_summary_20261123Z.json"
    assert json.loads(body) == summary


def test_no_document_is_sent_when_attach_summary_is_off(bot_api: FakeBotApi) -> None:
    notifier = _notifier(bot_api, attach_summary=False)

    notifier.run_finished(_summary({}))
    notifier.close()

    assert bot_api.of("sendDocument") == []
    assert len(bot_api.texts()) == 1


def test_failures_within_the_window_arrive_as_one_message(bot_api: FakeBotApi) -> None:
    notifier = _notifier(bot_api, batch_window_s=0.5, escalate_share=1.0)
    notifier.run_started({**STARTED, "to_run": 10})
    for symbol in ("AAA", "BBB", "CCC"):
        notifier.item_failed(symbol, f"exited with code 3 ({symbol})")

    bot_api.wait_for(2)
    notifier.close()

    alerts = bot_api.texts()[1:]
    assert len(alerts) == 1
    assert alerts[0].startswith("❌ retrainer: 3 symbols failed (3 so far this run)")
    assert all(f"• {s}: exited with code 3 ({s})" in alerts[0] for s in ("AAA", "BBB", "CCC"))


def test_a_systemic_failure_is_escalated_at_once_without_waiting_for_the_window(
    bot_api: FakeBotApi,
) -> None:
    notifier = _notifier(bot_api, batch_window_s=600, escalate_share=0.5)
    notifier.run_started(STARTED)  # 4 symbols to train
    notifier.item_failed("AAA", "boom")
    notifier.item_failed("BBB", "boom")

    bot_api.wait_for(2, timeout_s=10)
    notifier.close()

    assert bot_api.texts()[1].startswith(
        "🚨 retrainer: SYSTEMIC FAILURE? 2 of 4 symbols to train have failed (50%)"
    )


def test_a_message_over_the_limit_is_split_into_parts_that_all_arrive(bot_api: FakeBotApi) -> None:
    notifier = _notifier(bot_api, attach_summary=False)
    failures = {f"SYM{i:03d}": "RuntimeError: " + "x" * 200 for i in range(40)}

    notifier.run_finished(_summary(failures))
    notifier.close()

    parts = bot_api.texts()
    assert len(parts) >= 2
    assert all(utf16_len(p) <= MESSAGE_LIMIT for p in parts)
    joined = "\n".join(parts)
    assert all(f"• {s}: failed: RuntimeError" in joined for s in failures)


def test_a_429_is_retried_after_the_servers_retry_after(bot_api: FakeBotApi) -> None:
    bot_api.script("429")
    notifier = _notifier(bot_api)

    with capture_logs() as logs:
        notifier.run_started(STARTED)
        notifier.close()

    first, second = bot_api.of("sendMessage")
    assert (first.answer, second.answer) == ("429", "ok")
    assert second.at - first.at >= 0.95  # retry_after = 1 s
    assert [e["event"] for e in logs if e["event"].startswith("notify_")] == [
        "notify_retry",
        "notify_sent",
        "notify_closed",
    ]


def test_server_errors_are_retried_a_bounded_number_of_times_then_logged(
    bot_api: FakeBotApi,
) -> None:
    bot_api.script(then="500")
    notifier = _notifier(bot_api, max_retries=2)

    with capture_logs() as logs:
        notifier.run_started(STARTED)
        notifier.close()

    assert [r.answer for r in bot_api.requests] == ["500", "500", "500"]
    failed = [e for e in logs if e["event"] == "notify_failed"]
    assert failed[0]["what"] == "run_started" and failed[0]["attempts"] == 3
    assert "Internal Server Error" in failed[0]["reason"]


def test_a_500_then_success_delivers_the_message_once(bot_api: FakeBotApi) -> None:
    bot_api.script("500", "500")
    notifier = _notifier(bot_api)

    notifier.run_started(STARTED)
    notifier.close()

    assert [r.answer for r in bot_api.requests] == ["500", "500", "ok"]
    assert len(bot_api.texts()) == 1


def test_a_refused_token_stops_all_sending_and_is_logged_without_the_token(
    bot_api: FakeBotApi,
) -> None:
    bot_api.script(then="401")
    notifier = _notifier(bot_api)

    with capture_logs() as logs:
        notifier.run_started(STARTED)
        notifier.item_failed("AAA", "boom")
        notifier.run_finished(_summary({"AAA": "boom"}))
        notifier.close()

    assert len(bot_api.requests) == 1  # no retry, and nothing after it
    failed = [e for e in logs if e["event"] == "notify_failed"]
    assert "refused the token or chat" in failed[0]["reason"]
    assert TOKEN not in repr(logs)


def test_a_hanging_server_delays_close_by_at_most_the_close_timeout(bot_api: FakeBotApi) -> None:
    bot_api.script(then="hang")
    notifier = _notifier(bot_api, request_timeout_s=30, close_timeout_s=1.5)
    notifier.run_started(STARTED)
    notifier.item_failed("AAA", "boom")
    notifier.run_finished(_summary({"AAA": "boom"}))

    with capture_logs() as logs:
        started = time.monotonic()
        notifier.close()
        took = time.monotonic() - started

    assert took < 4.0  # close_timeout_s 1.5 plus slack on a busy machine
    assert any(e["event"] == "notify_failed" for e in logs)


def test_an_unreachable_api_url_is_retried_then_given_up(tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    notifier = _notifier(f"http://127.0.0.1:{port}", max_retries=1)

    with capture_logs() as logs:
        notifier.run_started(STARTED)
        notifier.close()

    events = [e["event"] for e in logs if e["event"].startswith("notify_")]
    assert events == ["notify_retry", "notify_failed", "notify_closed"]


def test_the_token_and_chat_id_can_come_from_a_secrets_file(
    bot_api: FakeBotApi, tmp_path: Path
) -> None:
    secrets = tmp_path / "telegram.env"
    secrets.write_text(f"# bot\nexport {TOKEN_ENV}='{TOKEN}'\n{CHAT_ID_ENV}=777\n")
    notifier = TelegramNotifier(
        {"kind": "telegram", "api_url": bot_api.api_url, "secrets_file": secrets}, environ={}
    )

    notifier.run_started(STARTED)
    notifier.close()

    (request,) = bot_api.requests
    assert (request.token, request.fields["chat_id"]) == (TOKEN, "777")


def test_a_notifier_without_a_token_is_logged_and_replaced_by_the_null_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    monkeypatch.setenv(CHAT_ID_ENV, "42")

    with capture_logs() as logs:
        notifier = notifier_for_run(NotifySettings(kind="telegram"))

    assert isinstance(notifier, NullNotifier)
    (event,) = logs
    assert event["event"] == "notify_failed" and TOKEN_ENV in event["reason"]


def test_a_secrets_file_line_without_a_name_is_reported_without_its_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = tmp_path / "telegram.env"
    secrets.write_text(f"{TOKEN}\n")

    with capture_logs() as logs:
        notifier = notifier_for_run(NotifySettings(kind="telegram", secrets_file=secrets))

    assert isinstance(notifier, NullNotifier)
    assert "line 1 is not NAME=VALUE" in logs[0]["reason"]
    assert TOKEN not in repr(logs)


def test_a_disabled_notifier_is_the_null_one_whatever_the_kind() -> None:
    assert isinstance(
        notifier_for_run(NotifySettings(kind="telegram", enabled=False)), NullNotifier
    )


def test_the_http_libraries_do_not_log_request_urls(
    bot_api: FakeBotApi, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    notifier = _notifier(bot_api)

    notifier.run_started(STARTED)
    notifier.close()

    assert TOKEN not in caplog.text
