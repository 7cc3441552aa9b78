"""The notifier's texts, their splitting at Telegram's limit, and failure batching."""

from __future__ import annotations

from typing import Any

import pytest

from retrainer.notify.batching import FailureBatcher
from retrainer.notify.messages import (
    MESSAGE_LIMIT,
    finished_text,
    items_that_can_fail,
    split_text,
    started_text,
    utf16_len,
)


def _summary(**over: Any) -> dict[str, Any]:
    by_symbol = {
        "AAA": {"status": "success", "minutes": 2.5, "metrics": {"net_sharpe": 1.234}},
        "BBB": {"status": "success", "minutes": 0.25, "metrics": {"net_sharpe": -0.5}},
        "CCC": {"status": "success", "minutes": 4.0, "metrics": {"net_sharpe": float("nan")}},
        "DDD": {"status": "failed", "reason": "ValueError: boom from DDD", "minutes": None},
        "EEE": {"status": "timeout", "reason": "timed out after 45 min", "minutes": None},
        "FFF": {"status": "skipped", "minutes": 9.0, "metrics": {"net_sharpe": 9.9}},
    }
    summary = {
        "run_id": "20261123_020000Z-77",
        "host": "trainbox",
        "exit_code": 1,
        "total_symbols": 6,
        "succeeded": 3,
        "failed": 2,
        "timed_out": 1,
        "skipped": 1,
        "interrupted": 0,
        "total_wall_minutes": 12.5,
        "by_symbol": by_symbol,
        "failures": {"DDD": "ValueError: boom from DDD", "EEE": "timed out after 45 min"},
    }
    return {**summary, **over}


def test_the_started_message_names_mode_driver_symbol_count_and_concurrency() -> None:
    text = started_text(
        {
            "run_id": "r-1",
            "host": "box",
            "mode": "hybrid",
            "driver": "local",
            "symbols": 20,
            "to_run": 18,
            "to_skip": 2,
            "window": 4,
            "threads_per_item": 2,
        }
    )

    assert "run started on box" in text
    assert "mode hybrid · driver local · 20 symbols (18 to train, 2 to skip)" in text
    assert "concurrency 4" in text


def test_the_finished_message_counts_outcomes_and_names_slowest_failures_and_sharpe() -> None:
    text = finished_text(_summary())

    assert "(exit 1)" in text
    assert "succeeded 3 · failed 2 (timed out 1) · skipped 1" in text
    assert "wall time 12.5 min" in text
    assert "slowest: CCC 4.0 min, AAA 2.5 min, BBB 15.0 s" in text
    # A NaN Sharpe is no one's best; a skipped symbol did not train tonight.
    assert "net Sharpe: best AAA 1.23 · worst BBB -0.50" in text
    assert "• DDD: failed: ValueError: boom from DDD" in text
    assert "• EEE: timeout: timed out after 45 min" in text


def test_a_clean_night_says_so_without_a_failure_section() -> None:
    text = finished_text(_summary(exit_code=0, failures={}))

    assert text.startswith("✅")
    assert "failures:" not in text


def test_a_short_text_is_one_part_unchanged() -> None:
    assert split_text("hello\nworld") == ["hello\nworld"]


def test_a_long_text_is_split_at_line_ends_into_parts_within_the_limit() -> None:
    lines = [f"• SYM{i:04d}: failed: ValueError: something went wrong" for i in range(300)]
    text = "\n".join(lines)

    parts = split_text(text)

    assert len(parts) > 1
    assert all(utf16_len(p) <= MESSAGE_LIMIT for p in parts)
    assert "\n".join(parts) == text  # nothing lost, nothing cut inside a line


def test_a_single_line_longer_than_the_limit_is_cut_hard_and_emoji_count_double() -> None:
    text = "😀" * 3000  # 6000 UTF-16 units

    parts = split_text(text)

    assert [utf16_len(p) for p in parts] == [4096, 1904]
    assert "".join(parts) == text


@pytest.mark.parametrize("limit", [5, 7])
def test_splitting_mixed_lines_keeps_every_character(limit: int) -> None:
    text = "ab\nabcdefghijklmnop\n\nxyz\n😀😀😀😀"

    parts = split_text(text, limit)

    assert all(utf16_len(p) <= limit for p in parts)
    assert "".join(parts).replace("\n", "") == text.replace("\n", "")


def test_failures_inside_one_window_make_one_message_sent_when_the_window_closes() -> None:
    batcher = FailureBatcher(window_s=60, escalate_share=0.5, to_run=100)

    batcher.add("AAA", "ValueError: boom", now=0.0)
    batcher.add("BBB", "exited with code 3", now=10.0)

    assert batcher.take(now=59.0) is None
    text = batcher.take(now=60.0)
    assert text is not None
    assert text.splitlines()[0] == "❌ retrainer: 2 symbols failed (2 so far this run)"
    assert "• AAA: ValueError: boom" in text and "• BBB: exited with code 3" in text
    assert batcher.take(now=1000.0) is None


def test_a_failure_after_a_sent_batch_opens_a_new_window() -> None:
    batcher = FailureBatcher(window_s=60, escalate_share=0.5, to_run=100)
    batcher.add("AAA", "boom", now=0.0)
    assert batcher.take(now=60.0) is not None

    batcher.add("BBB", "boom", now=100.0)

    assert batcher.take(now=159.0) is None
    assert "1 symbol failed (2 so far this run)" in (batcher.take(now=160.0) or "")


def test_reaching_the_escalation_share_sends_at_once_and_only_once() -> None:
    batcher = FailureBatcher(window_s=60, escalate_share=0.5, to_run=4)
    batcher.add("AAA", "boom", now=0.0)
    assert batcher.take(now=1.0) is None

    batcher.add("BBB", "boom", now=2.0)  # 2 of 4: the threshold
    escalation = batcher.take(now=2.0)

    assert escalation is not None
    assert escalation.startswith(
        "🚨 retrainer: SYSTEMIC FAILURE? 2 of 4 symbols to train have failed (50%)"
    )
    batcher.add("CCC", "boom", now=3.0)
    assert batcher.take(now=3.0) is None  # later failures are batched again
    assert (batcher.take(now=63.0) or "").startswith("❌")


def test_discarding_drops_the_pending_batch() -> None:
    batcher = FailureBatcher(window_s=60, escalate_share=1.0, to_run=10)
    batcher.add("AAA", "boom", now=0.0)

    assert batcher.discard() == 1
    assert batcher.take_all() is None


def test_symbols_failed_on_bad_data_count_in_the_share_that_escalates() -> None:
    info = {"symbols": 10, "to_run": 1, "to_skip": 5, "bad_data": 4}
    assert items_that_can_fail(info) == 5  # 1 to train and 4 that failed before any attempt
    assert "1 to train, 5 to skip, 4 failed on bad data" in started_text(info)
    assert items_that_can_fail({"symbols": 7}) == 7  # no plan counts: every symbol


def test_without_bad_data_the_started_message_keeps_its_counts() -> None:
    info = {"symbols": 3, "to_run": 2, "to_skip": 1}
    assert "(2 to train, 1 to skip)" in started_text(info)
    assert items_that_can_fail(info) == 2
