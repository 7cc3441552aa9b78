"""The champion through real nights: the gate decides, the pointer moves only when it
says so, and the decision is shown in the ledger, the summary, the report and the webhook
message; symbols unchanged since their champion are skipped as fresh; stale data is
flagged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from retrainer.base.artifacts import FEATURES_FILE, Layout, verify_manifest
from retrainer.base.clock import now_utc, run_day
from retrainer.ledger.journal import read_ledger
from retrainer.notify.credentials import WEBHOOK_URL_ENV
from retrainer.registry.champion import read_champion
from tests.conftest import TINY_TRAINER, RunCli, read_json, write_config
from tests.support.http_server import RecordingServer

SYMBOL = "BTCUSDT"


@pytest.fixture
def hooks() -> Any:
    server = RecordingServer().start()
    yield server
    server.stop()


def graded_config(
    tmp_path: Path,
    small_data: Path,
    log_loss: float,
    more_params: dict[str, Any] | None = None,
    **sections: dict[str, Any],
) -> Path:
    params = {
        "scores": {SYMBOL: {"test_log_loss": log_loss, "accuracy_edge": 0.01}},
        **(more_params or {}),
    }
    return write_config(
        tmp_path / "graded.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": SYMBOL, "retries": 0},
            "data": {"path": str(small_data)},
            "trainer": {"plugin": "tests.support.graded:graded", "params": params},
            **sections,
        },
    )


def today_entry(tmp_path: Path) -> Any:
    layout = Layout(tmp_path / "root")
    day = run_day(now_utc())
    return read_ledger(layout.status_path(day), layout.journal_path(day)).entries[SYMBOL]


def summary(tmp_path: Path) -> dict[str, Any]:
    result: dict[str, Any] = read_json(Layout(tmp_path / "root").summary_path(run_day(now_utc())))
    return result


def champion(tmp_path: Path) -> Any:
    return read_champion(Layout(tmp_path / "root"), SYMBOL)


def test_a_worse_second_challenger_leaves_the_champion_in_place_with_the_reason_everywhere(
    tmp_path: Path, small_data: Path, run_cli: RunCli, hooks: RecordingServer
) -> None:
    textfile = tmp_path / "collector" / "retrainer.prom"
    notify: dict[str, dict[str, Any]] = {
        "notify": {"kind": "webhook", "close_timeout_s": 10},
        "prometheus": {"textfile": str(textfile)},
    }
    env = {WEBHOOK_URL_ENV: f"{hooks.url}/h"}
    first = run_cli(
        "run", "--config", str(graded_config(tmp_path, small_data, 0.680, **notify)), env=env
    )
    assert first.returncode == 0, first.stderr
    crowned = champion(tmp_path)
    assert (
        crowned.decision == "first_model"
        and crowned.artifact_dir == today_entry(tmp_path).artifact_dir
    )
    assert summary(tmp_path)["promotions"]["first_model"] == 1

    worse = graded_config(tmp_path, small_data, 0.700, **notify)
    second = run_cli("run", "--config", str(worse), "--force", env=env)

    assert second.returncode == 0, second.stderr
    assert champion(tmp_path) == crowned  # the pointer did not move
    reason = "test_log_loss 0.7 worse than champion 0.68"
    entry = today_entry(tmp_path)
    assert entry.artifact_dir != crowned.artifact_dir
    assert entry.promotion["decision"] == "kept_champion"
    assert entry.promotion["reason"] == reason
    assert entry.promotion["basis"] == "re-evaluated"  # the plug-in's evaluate hook ran
    assert summary(tmp_path)["champions_kept"] == {SYMBOL: reason}
    assert summary(tmp_path)["by_symbol"][SYMBOL]["promotion"]["decision"] == "kept_champion"
    assert f"champion kept:\n• {SYMBOL}: {reason}" in second.stdout
    finished = [r.json() for r in hooks.requests if r.json()["event"] == "run_finished"]
    assert f"• {SYMBOL}: {reason}" in finished[-1]["text"]
    assert finished[-1]["champions_kept"] == {SYMBOL: reason}
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(textfile.read_text())
        for sample in family.samples
    }
    assert samples[("retrainer_last_run_promotions", (("decision", "kept_champion"),))] == 1
    assert ("retrainer_champion_age_seconds", (("symbol", SYMBOL),)) in samples
    report = run_cli("report", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "r"))
    assert report.returncode == 0, report.stderr
    page = next((tmp_path / "r").rglob("*.html")).read_text()
    assert f"kept_champion ({reason})" in page


def test_a_better_challenger_is_promoted_and_the_pointer_names_the_one_it_replaced(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    assert (
        run_cli("run", "--config", str(graded_config(tmp_path, small_data, 0.690))).returncode == 0
    )
    first = champion(tmp_path)

    better = run_cli("run", "--config", str(graded_config(tmp_path, small_data, 0.680)), "--force")

    assert better.returncode == 0, better.stderr
    promoted = champion(tmp_path)
    assert promoted.decision == "promoted" and promoted.previous == first.artifact_dir
    assert promoted.artifact_dir == today_entry(tmp_path).artifact_dir
    assert "test_log_loss 0.68 better than champion 0.69" in promoted.reason
    assert (
        verify_manifest(tmp_path / "root" / promoted.artifact_dir, promoted.manifest_sha256) == []
    )


def test_the_champion_is_compared_on_the_challenger_s_span_not_on_what_it_once_reported(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    assert (
        run_cli("run", "--config", str(graded_config(tmp_path, small_data, 0.690))).returncode == 0
    )
    # Re-scored on tonight's span the champion does worse (0.72) than it reported (0.69):
    # a challenger at 0.70 beats it there.
    config = graded_config(tmp_path, small_data, 0.700, {"rescore_shift": 0.03})

    assert run_cli("run", "--config", str(config), "--force").returncode == 0

    assert today_entry(tmp_path).promotion["decision"] == "promoted"
    assert champion(tmp_path).reason == "test_log_loss 0.7 better than champion 0.72"


def test_a_champion_that_cannot_be_rescored_is_compared_on_its_reported_metrics_and_says_so(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    assert (
        run_cli("run", "--config", str(graded_config(tmp_path, small_data, 0.690))).returncode == 0
    )
    config = graded_config(tmp_path, small_data, 0.700, {"evaluate_fails": True})

    assert run_cli("run", "--config", str(config), "--force").returncode == 0

    promotion = today_entry(tmp_path).promotion
    assert promotion["decision"] == "kept_champion" and promotion["basis"] == "reported"
    assert (
        "could not be re-scored (RuntimeError: the champion's format is too old"
        in promotion["note"]
    )


@pytest.mark.parametrize(("mode", "decision"), [("always", "promoted"), ("never", "kept_champion")])
def test_promote_always_or_never_overrides_the_gate_for_the_run(
    tmp_path: Path, small_data: Path, run_cli: RunCli, mode: str, decision: str
) -> None:
    assert (
        run_cli("run", "--config", str(graded_config(tmp_path, small_data, 0.690))).returncode == 0
    )
    first = champion(tmp_path)
    worse = graded_config(tmp_path, small_data, 0.750)

    assert run_cli("run", "--config", str(worse), "--force", "--promote", mode).returncode == 0

    assert today_entry(tmp_path).promotion["decision"] == decision
    assert (champion(tmp_path) != first) == (mode == "always")


def test_a_symbol_unchanged_since_its_champion_is_skipped_as_fresh_until_its_data_changes(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    data = tmp_path / "data"
    shutil.copytree(small_data, data)
    config = graded_config(tmp_path, data, 0.690)
    assert run_cli("run", "--config", str(config)).returncode == 0
    crowned = champion(tmp_path)
    shutil.rmtree(tmp_path / "root" / "runs")  # the next night: a new day's ledger

    fresh = run_cli("run", "--config", str(config))

    assert fresh.returncode == 0, fresh.stderr
    assert summary(tmp_path)["fresh"] == 1 and summary(tmp_path)["succeeded"] == 0
    entry = today_entry(tmp_path)
    assert entry.state.value == "skipped" and entry.why.startswith("fresh: ")
    assert "fresh (skipped) 1" in fresh.stdout
    assert run_cli("run", "--config", str(config), "--force").returncode == 0  # trains anyway
    assert today_entry(tmp_path).state.value == "success"

    shutil.rmtree(tmp_path / "root" / "runs")
    import pyarrow.parquet as pq

    path = data / f"{SYMBOL}.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 1), path)  # a bar less: new inputs
    assert run_cli("run", "--config", str(config)).returncode == 0
    assert today_entry(tmp_path).state.value == "success"
    assert champion(tmp_path) != crowned


def test_stale_data_is_flagged_in_the_plan_and_the_summary(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    # The generated data ends on a fixed date, long before the test runs.
    config = graded_config(tmp_path, small_data, 0.690)
    plan = run_cli("run", "--config", str(config), "--dry-run")
    assert "STALE" in plan.stdout and "1 with stale data" in plan.stdout
    assert run_cli("run", "--config", str(config)).returncode == 0
    assert summary(tmp_path)["stale"] == [SYMBOL]
    assert summary(tmp_path)["by_symbol"][SYMBOL]["stale"] is True

    lenient = graded_config(
        tmp_path, small_data, 0.690, data={"path": str(small_data), "stale_after_hours": 1e7}
    )
    assert run_cli("run", "--config", str(lenient), "--force").returncode == 0
    assert summary(tmp_path)["stale"] == []


def test_features_can_stay_out_of_the_kept_folder_or_out_of_the_mirror(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    mirror = tmp_path / "mirror"
    storage = {"kind": "local", "path": str(mirror), "upload_features": False}
    config = graded_config(tmp_path, small_data, 0.690, storage=storage)
    assert run_cli("run", "--config", str(config)).returncode == 0
    folder = today_entry(tmp_path).artifact_dir
    assert (tmp_path / "root" / folder / FEATURES_FILE).is_file()
    assert not (mirror / folder / FEATURES_FILE).exists()
    assert (mirror / folder / "model.bin").is_file()
    assert run_cli("verify", "--config", str(config), "--remote").returncode == 0

    run = {"root": str(tmp_path / "root"), "symbols": SYMBOL, "retries": 0, "keep_features": False}
    dropped = graded_config(tmp_path, small_data, 0.690, run=run)
    assert run_cli("run", "--config", str(dropped), "--force").returncode == 0
    folder = tmp_path / "root" / today_entry(tmp_path).artifact_dir
    assert not (folder / FEATURES_FILE).exists()
    assert verify_manifest(folder) == []


def test_the_default_trainer_keeps_its_champion_against_an_identical_challenger_with_a_margin(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    margin = {
        "rules": [
            {"metric": "test_log_loss", "greater_is_better": False, "min_absolute_change": 0.001}
        ]
    }
    config = write_config(
        tmp_path / "real.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": SYMBOL, "retries": 0},
            "data": {"path": str(small_data)},
            "trainer": {"params": TINY_TRAINER},
            "promote": margin,
        },
    )
    assert run_cli("run", "--config", str(config)).returncode == 0
    crowned = champion(tmp_path)

    again = run_cli("run", "--config", str(config), "--force")  # deterministic: the same model

    assert again.returncode == 0, again.stderr
    promotion = today_entry(tmp_path).promotion
    assert promotion["basis"] == "re-evaluated"
    assert promotion["decision"] == "kept_champion"
    assert (
        "equal to champion" in promotion["reason"] and "by less than 0.001" in promotion["reason"]
    )
    assert champion(tmp_path) == crowned
    scored = json.loads(
        (tmp_path / "root" / today_entry(tmp_path).artifact_dir / "champion_eval.json").read_text()
    )
    assert scored["ok"] is True


def forget_the_decision(tmp_path: Path) -> None:
    """As if the scheduler died between recording the success and the gate's decision."""
    from dataclasses import replace

    from retrainer.ledger.journal import Ledger

    layout = Layout(tmp_path / "root")
    day = run_day(now_utc())
    ledger = Ledger(layout.status_path(day), layout.journal_path(day))
    entry = ledger.get(SYMBOL)
    assert entry is not None
    ledger.record(replace(entry, promotion=None))
    ledger.close()


def test_a_success_the_gate_never_judged_is_judged_when_the_next_run_opens(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = graded_config(tmp_path, small_data, 0.690)
    assert run_cli("run", "--config", str(config)).returncode == 0
    crowned = champion(tmp_path)

    forget_the_decision(tmp_path)  # the pointer had been written: its decision is taken
    assert run_cli("run", "--config", str(config)).returncode == 0
    promotion = today_entry(tmp_path).promotion
    assert promotion["decision"] == "first_model" and "CHAMPION pointer" in promotion["note"]
    assert champion(tmp_path) == crowned

    forget_the_decision(tmp_path)  # the pointer had not been written: the gate judges it
    (tmp_path / "root" / "models" / SYMBOL / "CHAMPION").unlink()
    assert run_cli("run", "--config", str(config)).returncode == 0
    assert today_entry(tmp_path).promotion["decision"] == "first_model"
    assert champion(tmp_path).artifact_dir == crowned.artifact_dir


def test_a_challenger_kept_out_is_not_trained_again_on_the_same_inputs(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    assert (
        run_cli("run", "--config", str(graded_config(tmp_path, small_data, 0.69))).returncode == 0
    )
    worse = graded_config(tmp_path, small_data, 0.70)
    assert run_cli("run", "--config", str(worse), "--force").returncode == 0
    assert today_entry(tmp_path).promotion["decision"] == "kept_champion"
    runs = tmp_path / "root" / "runs"
    day = run_day(now_utc())
    (runs / day).rename(runs / "20200101Z")  # an earlier night: today has no ledger yet

    again = run_cli("run", "--config", str(worse))

    assert again.returncode == 0, again.stderr
    entry = today_entry(tmp_path)
    assert entry.state.value == "skipped"
    assert entry.why.startswith("fresh: unchanged since its last challenger was kept out")
