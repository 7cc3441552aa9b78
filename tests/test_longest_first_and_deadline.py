"""Longest first from history, the forecast and the deadline, through the real command:
past ledgers (seeded) order the queue, a new symbol goes first, a torn or older ledger is
skipped with a note, a night whose deadline passes starts nothing more and leaves the
rest's champions in place, and a deadline that is not a time is bad input."""

from __future__ import annotations

import json
import math
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from retrainer.base.artifacts import Layout
from retrainer.base.clock import iso, now_utc, run_day
from retrainer.ledger.entries import Attempt, ItemState, LedgerEntry
from retrainer.ledger.journal import Ledger
from retrainer.notify.credentials import WEBHOOK_URL_ENV
from retrainer.notify.messages import finished_text, started_text
from retrainer.plan.forecast import (
    deadline_warning,
    longest_first,
    make_forecast,
    next_local_time,
    remaining_s,
    simulate,
)
from retrainer.views.runview import build_view
from tests.conftest import RunCli, read_json, write_config
from tests.support.http_server import RecordingServer

SYMBOLS = ["BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]  # small_data's


def yesterday() -> str:
    return run_day(now_utc() - timedelta(days=1))


def seed_history(root: Path, day: str, seconds: dict[str, float]) -> None:
    """A past night's ledger in which each symbol succeeded once, taking these seconds."""
    layout = Layout(root)
    ledger = Ledger(layout.status_path(day), layout.journal_path(day))
    began = now_utc() - timedelta(days=1)
    for n, (symbol, took) in enumerate(sorted(seconds.items())):
        start = began + timedelta(minutes=n)
        attempt = Attempt(
            number=1,
            state=ItemState.SUCCESS,
            started_at=iso(start),
            artifact_dir=f"models/{symbol}/old",
            device="cpu",
            threads=1,
            ended_at=iso(start + timedelta(seconds=took)),
            seconds=took,
        )
        entry = LedgerEntry(symbol, ItemState.SUCCESS, iso(start), attempts=(attempt,))
        ledger.record(entry)
    ledger.close()


def config(tmp_path: Path, small_data: Path, **run: Any) -> Path:
    params = run.pop("params", {})
    return write_config(
        tmp_path / "night.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": "all", "retries": 0, **run},
            "data": {"path": str(small_data)},
            "trainer": {
                "plugin": "tests.support.plugins:light",
                "params": {"pid_dir": str(tmp_path / "pids"), **params},
            },
        },
    )


def started_order(root: Path, run_id: str | None = None) -> list[str]:
    log = Layout(root).engine_log(run_day(now_utc()))
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [
        e["symbol"]
        for e in events
        if e["event"] == "coin_started" and (run_id is None or e.get("run_id") == run_id)
    ]


def today_summary(root: Path) -> dict[str, Any]:
    found: dict[str, Any] = read_json(Layout(root).summary_path(run_day(now_utc())))
    return found


# -- through the command -----------------------------------------------------------------
def test_the_longest_expected_symbols_start_first_and_a_new_one_before_them_all(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    root = tmp_path / "root"
    seed_history(root, yesterday(), {"BTCUSDT": 300, "ETHUSDT": 50, "SOLUSDT": 200, "BNBUSDT": 100})
    cfg = config(tmp_path, small_data, max_concurrent=1)

    dry = run_cli("run", "--config", str(cfg), "--dry_run", "--order", "plan")
    assert dry.returncode == 0, dry.stderr
    assert "from 4 symbols' history; 1 new); plan order" in dry.stdout
    done = run_cli("run", "--config", str(cfg))

    assert done.returncode == 0, done.stderr
    assert started_order(root) == ["XRPUSDT", "BTCUSDT", "SOLUSDT", "BNBUSDT", "ETHUSDT"]
    run = today_summary(root)
    assert run["order"] == "longest_first"
    assert "expected_s" not in run  # kept per symbol instead
    assert run["by_symbol"]["BTCUSDT"]["expected_s"] == 300
    assert "expected_s" not in run["by_symbol"]["XRPUSDT"]  # no history: new


def test_a_torn_or_older_ledger_is_skipped_with_a_note_and_the_night_still_runs(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    root = tmp_path / "root"
    good, torn, old = (run_day(now_utc() - timedelta(days=d)) for d in (1, 2, 3))
    seed_history(root, good, {"ETHUSDT": 500})
    for day, text in (
        (torn, '{"schema": 1, "journal_seq": 4, "runs": [], "symbols": {"BTCUSDT": {"sta'),
        (old, '{"version": 0, "symbols": {"BTCUSDT": {"state": "success"}}}\n'),
    ):
        (root / "runs" / day).mkdir(parents=True)
        (root / "runs" / day / "status.json").write_text(text)
    cfg = config(tmp_path, small_data, max_concurrent=1, symbols="BTCUSDT,ETHUSDT")

    dry = run_cli("run", "--config", str(cfg), "--dry_run")
    done = run_cli("run", "--config", str(cfg))

    assert dry.returncode == 0, dry.stderr
    assert f"history: the ledger of {torn} was skipped (status.json is torn" in dry.stdout
    assert f"history: the ledger of {old} was skipped (status.json names no schema" in dry.stdout
    assert done.returncode == 0, done.stderr
    assert started_order(root) == ["BTCUSDT", "ETHUSDT"]  # BTCUSDT: no usable history


def local_deadline(seconds_ahead: float) -> tuple[str, float]:
    """HH:MM:SS local, a whole second at least seconds_ahead from now, and its epoch."""
    at = math.ceil(time.time() + seconds_ahead)
    return datetime.fromtimestamp(at).strftime("%H:%M:%S"), float(at)


@pytest.fixture
def hooks() -> Any:
    server = RecordingServer().start()
    yield server
    server.stop()


def test_past_the_deadline_nothing_starts_the_running_one_finishes_and_champions_stay(
    tmp_path: Path, small_data: Path, run_cli: RunCli, hooks: RecordingServer
) -> None:
    root = tmp_path / "root"
    seed_history(root, yesterday(), {"BTCUSDT": 300})  # the longest: it starts first
    first = run_cli("run", "--config", str(config(tmp_path, small_data)), "--promote", "always")
    assert first.returncode == 0, first.stderr
    layout = Layout(root)
    pointers = {s: (root / "models" / s / "CHAMPION").read_bytes() for s in SYMBOLS}
    deadline, deadline_epoch = local_deadline(4.0)
    slow_s = deadline_epoch - time.time() + 1.5  # BTCUSDT runs past the deadline
    cfg = config(
        tmp_path,
        small_data,
        max_concurrent=1,
        params={"behaviours": {"BTCUSDT": "slow"}, "slow_s": slow_s},
    )
    (tmp_path / "night.toml").write_text(
        cfg.read_text() + '[notify]\nkind = "webhook"\nclose_timeout_s = 10\n'
    )

    second = run_cli(
        "run",
        "--config",
        str(cfg),
        "--force",
        "--promote",
        "always",
        "--deadline",
        deadline,
        env={WEBHOOK_URL_ENV: f"{hooks.url}/h"},
    )

    assert second.returncode == 4, second.stdout + second.stderr
    run_id = today_summary(root)["run_id"]
    assert started_order(root, run_id) == ["BTCUSDT"]
    summary = today_summary(root)
    assert summary["deadline_passed"] is True and summary["exit_code"] == 4
    assert summary["by_symbol"]["BTCUSDT"]["status"] == "success"
    for symbol in SYMBOLS[:1] + SYMBOLS[2:]:
        item = summary["by_symbol"][symbol]
        assert item["status"] == "not_started"
        assert item["reason"] == f"not started: deadline {deadline} passed"
        assert (root / "models" / symbol / "CHAMPION").read_bytes() == pointers[symbol]
    assert "1 succeeded, 0 failed, 0 skipped, 0 interrupted, 4 not started" in second.stdout
    log = layout.engine_log(run_day(now_utc())).read_text()
    assert log.count('"event": "deadline_passed"') == 1
    assert '"event": "deadline_at_risk"' in log  # BTCUSDT alone was expected to take 210 s
    texts = {r.json()["event"]: r.json()["text"] for r in hooks.wait_for(2)}
    assert "WARNING: the forecast misses the deadline" in texts["run_started"]
    assert f"deadline {deadline} passed: 4 not started" in texts["run_finished"]


@pytest.mark.parametrize("where", ["flag", "config"])
def test_a_deadline_that_is_not_a_time_is_bad_input_before_anything_starts(
    tmp_path: Path, small_data: Path, run_cli: RunCli, where: str
) -> None:
    if where == "flag":
        done = run_cli("run", "--config", str(config(tmp_path, small_data)), "--deadline", "25:00")
    else:
        done = run_cli("run", "--config", str(config(tmp_path, small_data, deadline="soon")))

    assert done.returncode == 2
    message = done.stderr.strip()
    assert "run.deadline: Value error, not a local time of day: expected HH:MM" in message
    assert "\n" not in message and "Traceback" not in message
    assert not (tmp_path / "root" / "runs").exists()


# -- the rules alone ----------------------------------------------------------------------
def test_longest_first_puts_new_items_first_then_the_longest_ties_in_plan_order() -> None:
    expected = {"A": 10.0, "B": None, "C": 30.0, "D": 10.0, "E": None}
    assert longest_first(expected) == ("B", "E", "C", "A", "D")


def test_list_scheduling_in_lpt_order_ends_at_the_lower_bound_on_an_easy_night() -> None:
    durations = {"a": 6.0, "b": 5.0, "c": 4.0, "d": 3.0, "e": 2.0, "f": 2.0}
    plan_order = simulate(list(durations.items())[::-1], slots=2)
    lpt = simulate([(i, durations[i]) for i in longest_first(dict(durations))], slots=2)
    assert max(i.end_s for i in lpt) == 11.0  # = sum / k
    assert max(i.end_s for i in plan_order) == 12.0  # the longest started last


def test_the_forecast_counts_the_items_a_deadline_would_cut() -> None:
    planned = datetime(2026, 12, 1, 22, 0).astimezone()
    forecast = make_forecast(["a", "b", "c", "d"], {"a": 100.0, "b": None}, 2, planned, 0.0)
    # Unknown ones count as the median of the known: 100 s each.
    assert [i.start_s for i in forecast.items] == [0.0, 0.0, 100.0, 100.0]
    assert forecast.makespan_s == 200.0
    warning = deadline_warning(forecast, "22:02:30", planned + timedelta(seconds=150))
    assert warning is not None and "by 50s: every item would start before it" in warning
    early = deadline_warning(forecast, "22:01", planned + timedelta(seconds=60))
    assert early is not None and "2 of 4 items would not start before it" in early
    assert forecast.starting_after(planned + timedelta(seconds=60)) == 2
    assert deadline_warning(forecast, "23:00", planned + timedelta(hours=1)) is None


def test_a_deadline_is_the_next_time_the_local_clock_reads_it() -> None:
    evening = datetime(2026, 12, 1, 22, 0).astimezone()
    assert next_local_time("06:00", evening) == datetime(2026, 12, 2, 6, 0).astimezone()
    night = datetime(2026, 12, 2, 1, 0).astimezone()
    assert next_local_time("06:00", night) == datetime(2026, 12, 2, 6, 0).astimezone()
    assert next_local_time("1:00:30", night) == datetime(2026, 12, 2, 1, 0, 30).astimezone()


def test_the_live_eta_replays_the_expected_durations_of_what_is_left() -> None:
    started = now_utc() - timedelta(seconds=10)
    running = Attempt(1, ItemState.RUNNING, iso(started), "x", "cpu", 1)
    entries = {"A": LedgerEntry("A", ItemState.RUNNING, iso(started), attempts=(running,))}
    run = {
        "run_id": "r",
        "started_at": iso(started),
        "window": 2,
        "to_run": 4,
        "expected_s": {"A": 40.0, "B": 60.0, "C": 20.0, "D": 20.0},
    }

    view = build_view("d", run, entries, now_utc(), alive=True, until=None)

    # A has 30 s left; B takes the free slot (60 s); C and D follow A: 30 + 20 + 20 = 70.
    assert view.eta_s == pytest.approx(70.0, abs=0.5)
    assert remaining_s([60.0, 20.0, 20.0], [30.0], 2) == 70.0


def test_the_start_and_finish_messages_say_the_forecast_and_the_deadline() -> None:
    info = {
        "forecast": "forecast: finishes at 05:40 local (makespan 1h10m, from 58 symbols' history)",
        "deadline": "06:00",
        "deadline_warning": None,
    }
    assert "finishes at 05:40 local (makespan 1h10m" in started_text(info)
    assert "deadline 06:00 local" in started_text(info)
    summary = {"deadline": "06:00", "deadline_passed": True, "not_started": 7, "exit_code": 4}
    assert "⏰ deadline 06:00 passed: 7 not started; their champions stay" in finished_text(summary)
