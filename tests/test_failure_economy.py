"""A failing night costs what it should: a retry budget for the whole run, a tolerated share
of failures that decides the exit code and the alert, and quarantine of a symbol that keeps
failing night after night. Real runs of the real command, past nights made by real runs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from retrainer.base.artifacts import Layout
from retrainer.base.clock import now_utc, run_day
from retrainer.job.summary import failure_tolerance
from retrainer.notify.credentials import WEBHOOK_URL_ENV
from retrainer.notify.messages import finished_text, severity
from retrainer.plan.history import SymbolHistory, read_history
from retrainer.plan.quarantine import Release, quarantine_of
from tests.conftest import RunCli, read_json, write_config
from tests.support.http_server import RecordingServer
from tests.test_item_faults import faulty_config, summary_of, symbols_of

BUDGET_SPENT = "no retry: the run's retry budget (2) is spent"


@pytest.fixture
def hooks() -> Iterator[RecordingServer]:
    server = RecordingServer().start()
    yield server
    server.stop()


def engine_events(root: Path, event: str) -> list[dict[str, Any]]:
    lines = Layout(root).engine_log(run_day(now_utc())).read_text().splitlines()
    return [e for e in map(json.loads, lines) if e.get("event") == event]


# -- the retry budget ------------------------------------------------------------------


def test_a_spent_retry_budget_makes_every_later_failure_final_and_says_why(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    names = symbols_of(small_data)
    config = faulty_config(
        tmp_path, small_data, dict.fromkeys(names, "raise"), retries=2, retry_budget=2
    )

    result = run_cli("run", "--config", str(config))

    assert result.returncode == 1, result.stderr
    summary = summary_of(tmp_path)
    by_symbol = summary["by_symbol"]
    assert sum(s["attempts"] for s in by_symbol.values()) == len(names) + 2  # 2 retries in all
    for symbol in names:  # each failure past the budget is final, and says so
        assert by_symbol[symbol]["status"] == "failed"
        assert by_symbol[symbol]["reason"].startswith(f"ValueError: boom from {symbol}")
        assert by_symbol[symbol]["reason"].endswith(BUDGET_SPENT)
    assert summary["retry_budget"] == {"budget": 2, "spent": 2, "left_without_retry": names}
    (spent,) = engine_events(tmp_path / "root", "retry_budget_spent")
    assert spent["left_without_retry"] == len(names) and spent["budget"] == 2


# -- the tolerated failure ratio -------------------------------------------------------


def test_failures_within_the_tolerated_ratio_exit_0_with_a_warning_and_past_it_exit_1(
    tmp_path: Path, small_data: Path, hooks: RecordingServer, run_cli: RunCli
) -> None:
    names = symbols_of(small_data)
    behaviours = {**dict.fromkeys(names, "ok"), names[0]: "raise"}  # 1 of 5 fails
    env = {WEBHOOK_URL_ENV: hooks.url}
    for ratio, code, level in [(0.2, 0, "warning"), (0.0, 1, "error")]:
        run_dir = tmp_path / f"ratio-{ratio}"
        run_dir.mkdir()
        config = faulty_config(run_dir, small_data, behaviours, tolerated_failure_ratio=ratio)
        config.write_text(config.read_text() + '\n[notify]\nkind = "webhook"\n')
        hooks.requests.clear()

        result = run_cli("run", "--config", str(config), env=env)

        assert result.returncode == code, result.stderr
        summary = summary_of(run_dir)
        assert summary["failed"] == 1 and summary["failure_ratio"] == 0.2
        assert summary["tolerated_failures"] == (1 if code == 0 else 0)
        assert summary["severity"] == level
        hooks.wait_for(2)  # started, finished (and maybe a failure alert): all sent by now
        (finished,) = [r.json() for r in hooks.requests if r.json()["event"] == "run_finished"]
        assert finished["severity"] == level and finished["exit_code"] == code
        if code == 0:
            assert finished["tolerated_failures"] == 1
            assert finished["text"].startswith("⚠️ retrainer: run finished")
            assert "(exit 0 · within tolerance)" in finished["text"]
            assert "failures within tolerance: 1 of 5 tried (20%)" in finished["text"]
        else:
            assert finished["text"].startswith("❌ retrainer: run finished")


def test_the_tolerated_share_counts_only_the_items_a_night_tried() -> None:
    assert failure_tolerance({"failed": 1, "succeeded": 4, "skipped": 20}, 0.2) == {
        "failure_ratio": 0.2,
        "tolerated_failure_ratio": 0.2,
        "tolerated_failures": 1,
    }
    assert failure_tolerance({"failed": 2, "succeeded": 3}, 0.2)["tolerated_failures"] == 0
    assert failure_tolerance({"failed": 0, "succeeded": 0}, 0.0)["failure_ratio"] == 0.0


def test_severity_tells_a_tolerated_night_from_a_failed_one() -> None:
    base = {"started": True, "by_symbol": {}, "failures": {}}
    assert severity({**base, "exit_code": 0, "failed": 0}) == "ok"
    assert severity({**base, "exit_code": 0, "failed": 1, "tolerated_failures": 1}) == "warning"
    assert severity({**base, "exit_code": 1, "failed": 3}) == "error"
    assert severity({**base, "exit_code": 130}) == "warning"
    assert severity({"started": False, "exit_code": 2}) == "error"
    text = finished_text(
        {**base, "exit_code": 1, "failed": 2, "succeeded": 3, "tolerated_failure_ratio": 0.2}
    )
    assert text.startswith("❌") and "failures past tolerance: 2 of 5 tried (40%)" in text


# -- quarantine ------------------------------------------------------------------------


def day_before(days: int) -> str:
    return run_day(now_utc() - timedelta(days=days))


def test_a_symbol_failing_night_after_night_is_quarantined_until_forced_or_released(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    bad, good = symbols_of(small_data)[:2]
    config = faulty_config(
        tmp_path, small_data, {bad: "raise", good: "ok"}, quarantine_after_nights=2
    )
    root = tmp_path / "root"
    runs = root / "runs"
    for days_ago in (2, 1):  # two failed nights: real runs, moved back to earlier days
        assert run_cli("run", "--config", str(config)).returncode == 1
        (runs / run_day(now_utc())).rename(runs / day_before(days_ago))

    planned = run_cli("run", "--config", str(config), "--dry_run")
    assert f"quarantined (1): {bad}" in planned.stdout, planned.stdout
    assert "quarantined: failed 2 nights in a row (last: ValueError: boom" in planned.stdout

    assert run_cli("run", "--config", str(config)).returncode == 0  # nothing failed tonight
    summary = summary_of(tmp_path)
    assert summary["quarantined"] == [bad]
    item = summary["by_symbol"][bad]
    assert item["status"] == "skipped" and item["attempts"] == 0 and item["failed_nights"] == 2
    assert item["why"].startswith("quarantined: failed 2 nights in a row (last: ValueError")
    assert item["why"].endswith(f"`retrainer unquarantine {bad}` or --force")
    status = read_json(runs / run_day(now_utc()) / "status.json")
    assert status["symbols"][bad]["state"] == "skipped"
    # The night that skipped it carries its streak, past the days a plan reads.
    assert read_history(Layout(root), day_before(-1), days=1).of(bad).failed_nights == 2

    forced = run_cli("run", "--config", str(config), "--force")
    assert forced.returncode == 1
    assert summary_of(tmp_path)["by_symbol"][bad]["attempts"] == 1
    assert summary_of(tmp_path)["quarantined"] == []

    released = run_cli("unquarantine", bad.lower(), "--config", str(config))
    assert released.returncode == 0, released.stderr
    assert f"released {bad} from quarantine (it had failed 2 nights in a row)" in released.stdout
    assert set(read_json(root / "quarantine.json")["symbols"]) == {bad}
    again = run_cli("unquarantine", bad, "--config", str(config))
    assert again.returncode == 0 and f"{bad} is not quarantined" in again.stdout
    unknown = run_cli("unquarantine", "NOSUCH", "--config", str(config))
    assert unknown.returncode == 2 and "NOSUCH is not in the ledgers" in unknown.stderr

    assert run_cli("run", "--config", str(config)).returncode == 1  # trained again: it fails
    summary = summary_of(tmp_path)
    assert summary["quarantined"] == [] and summary["by_symbol"][bad]["status"] == "failed"
    assert "; released from quarantine at " in summary["by_symbol"][bad]["why"]


def test_a_release_counts_only_the_failed_nights_after_it() -> None:
    past = SymbolHistory(
        "BAD",
        failed_nights=3,
        last_failure="ValueError: boom",
        failed_at=("2026-11-27T02:00:00.000Z", "2026-11-28T02:00:00.000Z", "2026-11-29T02:00Z"),
    )
    assert quarantine_of(past, None, 3) is not None
    assert quarantine_of(past, None, None) is None  # never
    release = Release("BAD", "2026-11-27T09:00:00.000Z", "ops@box")
    assert quarantine_of(past, release, 3) is None
    again = quarantine_of(past, release, 2)
    assert again is not None and again.failed_nights == 2


# -- bad input -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("retry_budget", -1, "greater than or equal to 0"),
        ("tolerated_failure_ratio", 1.5, "less than or equal to 1"),
        ("quarantine_after_nights", 0, "greater than or equal to 1"),
    ],
)
def test_a_bad_budget_ratio_or_quarantine_count_is_one_paragraph_and_exit_2(
    tmp_path: Path, run_cli: RunCli, key: str, value: float, said: str
) -> None:
    config = write_config(
        tmp_path / "bad.toml", {"run": {"root": str(tmp_path / "root"), key: value}}
    )

    result = run_cli("run", "--config", str(config))

    assert result.returncode == 2
    assert f"run.{key}: Input should be {said} (got {value})" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.strip().count("\n") == 0
    assert not (tmp_path / "root" / "runs").exists()  # nothing started
