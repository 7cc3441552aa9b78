"""Models: `retrainer models` lists champions and challengers; `retrainer.load_model` gives
the champion ready to predict, verified against its pointer, or says why it cannot."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

import retrainer
from retrainer.base.artifacts import Layout, write_manifest
from retrainer.base.clock import now_utc, run_day
from retrainer.ledger.journal import read_ledger
from retrainer.registry.loader import ModelLoadError, load_attempt, load_model
from retrainer.registry.models import attempt_time, list_models
from retrainer.views.models import age_text
from tests.conftest import REPO, TINY_TRAINER, RunCli, cli_env, write_config
from tests.support.loadable_plugins import TinyModel
from tests.support.model_folders import make_attempt, promote
from tests.support.training_data import make_bars

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "root")


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def a_symbol_with_history(layout: Layout) -> dict[str, Path]:
    """BTCUSDT: an old success, a failure, the champion (3 days ago), two newer successes."""
    folders = {
        "old": make_attempt(layout, "BTCUSDT", days_ago(10)),
        "failed": make_attempt(layout, "BTCUSDT", days_ago(5), success=False),
        "champion": make_attempt(layout, "BTCUSDT", days_ago(3) - timedelta(hours=4)),
        "yesterday": make_attempt(layout, "BTCUSDT", days_ago(1), log_loss=0.58),
        "today": make_attempt(layout, "BTCUSDT", NOW - timedelta(hours=2), log_loss=0.61),
    }
    promote(layout, folders["champion"], days_ago(3))
    return folders


# --- listing ---------------------------------------------------------------------------------


def test_a_listing_shows_the_champion_the_newer_challengers_and_counts_the_rest(
    layout: Layout,
) -> None:
    folders = a_symbol_with_history(layout)

    listed = list_models(layout, "BTCUSDT", NOW)

    assert listed.champion is not None
    assert listed.champion.folder == layout.relative(folders["champion"])
    assert listed.champion.verifies and listed.ok
    assert age_text(listed.champion.age_s) == "3d 0h"
    assert listed.champion.metrics == {"test_log_loss": 0.6, "net_sharpe": 1.25}
    assert [c.name for c in listed.challengers] == [
        folders["today"].name,
        folders["yesterday"].name,
    ]
    assert [c.metrics["test_log_loss"] for c in listed.challengers] == [0.61, 0.58]
    assert age_text(listed.challengers[0].age_s) == "2h 0m"
    assert listed.older == 2  # the old success and the failed attempt
    assert listed.older_bytes > 0


def test_without_a_champion_every_success_is_a_challenger(layout: Layout) -> None:
    make_attempt(layout, "ETHUSDT", days_ago(2))
    make_attempt(layout, "ETHUSDT", days_ago(1), success=False)

    listed = list_models(layout, "ETHUSDT", NOW)

    assert listed.champion is None and listed.ok
    assert len(listed.challengers) == 1 and listed.older == 1


def test_a_tampered_champion_is_listed_as_not_verifying(layout: Layout) -> None:
    folders = a_symbol_with_history(layout)
    (folders["champion"] / "model.bin").write_text("someone else's model")

    listed = list_models(layout, "BTCUSDT", NOW)

    assert listed.champion is not None and not listed.champion.verifies and not listed.ok
    assert "model.bin: sha256 mismatch" in listed.champion.problems[0]


def test_an_unreadable_pointer_is_reported_not_raised(layout: Layout) -> None:
    make_attempt(layout, "BTCUSDT", days_ago(1))
    (layout.model_dir("BTCUSDT") / "CHAMPION").write_text("{not json")

    listed = list_models(layout, "BTCUSDT", NOW)

    assert listed.pointer_error is not None and "cannot be read" in listed.pointer_error
    assert not listed.ok


def test_an_attempt_time_comes_from_its_name_else_from_its_mtime(layout: Layout) -> None:
    named = make_attempt(layout, "BTCUSDT", days_ago(4))
    renamed = named.rename(named.with_name("kept-by-hand"))

    assert attempt_time(make_attempt(layout, "BTCUSDT", days_ago(2))) == days_ago(2)
    assert abs(attempt_time(renamed).timestamp() - renamed.stat().st_mtime) < 1


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (3 * 86400 + 4 * 3600 + 59, "3d 4h"),
        (5 * 3600 + 12 * 60, "5h 12m"),
        (420, "7m"),
        (40, "40s"),
    ],
)
def test_an_age_reads_in_its_two_largest_units(seconds: float, text: str) -> None:
    assert age_text(seconds) == text


def test_the_models_command_prints_the_table_and_exits_0(layout: Layout, run_cli: RunCli) -> None:
    folders = a_symbol_with_history(layout)

    result = run_cli("models", "--root", str(layout.root))

    assert result.returncode == 0, result.stderr
    assert "champion" in result.stdout and "challenger" in result.stdout
    assert folders["champion"].name in result.stdout and folders["today"].name in result.stdout
    assert "2 older or failed attempt folder(s)" in result.stdout


def test_the_models_command_as_json_exits_1_for_a_champion_that_does_not_verify(
    layout: Layout, run_cli: RunCli
) -> None:
    folders = a_symbol_with_history(layout)
    (folders["champion"] / "metrics.json").write_text("{}")

    result = run_cli("models", "btcusdt", "--json", "--root", str(layout.root))

    assert result.returncode == 1
    (symbol,) = json.loads(result.stdout)["symbols"]
    assert symbol["symbol"] == "BTCUSDT" and symbol["champion"]["verifies"] is False
    assert len(symbol["challengers"]) == 2


def test_the_models_command_for_a_symbol_without_models_says_so(
    layout: Layout, run_cli: RunCli
) -> None:
    layout.root.mkdir()
    result = run_cli("models", "ETHUSDT", "--root", str(layout.root))
    assert (result.returncode, result.stdout.strip()) == (0, "no models for ETHUSDT")


# --- loading -----------------------------------------------------------------------------


def test_load_model_gives_the_champion_ready_to_predict(layout: Layout) -> None:
    folders = a_symbol_with_history(layout)
    bars = make_bars(50)

    model = retrainer.load_model(layout.root, "BTCUSDT")

    assert isinstance(model, TinyModel) and model.folder == folders["champion"]
    prob = model.predict_proba(bars)
    assert list(prob.index) == list(bars.index) and set(prob) == {0.55}


def test_load_model_refuses_a_tampered_champion_folder(layout: Layout) -> None:
    folders = a_symbol_with_history(layout)
    (folders["champion"] / "model.bin").write_text(json.dumps({"symbol": "X", "p_up": 0.99}))

    with pytest.raises(ModelLoadError, match=r"champion .* does not verify: .*model.bin: sha256"):
        load_model(str(layout.root), "BTCUSDT")
    assert load_model(layout.root, "BTCUSDT", verify=False).p_up == 0.99


def test_load_model_refuses_a_champion_folder_rehashed_after_its_promotion(layout: Layout) -> None:
    folders = a_symbol_with_history(layout)
    (folders["champion"] / "model.bin").write_text(json.dumps({"symbol": "X", "p_up": 0.99}))
    write_manifest(folders["champion"], durable=False)  # consistent, but not what was promoted

    with pytest.raises(ModelLoadError, match="sha256.txt: not the manifest promoted"):
        load_model(layout.root, "BTCUSDT")


def test_load_model_without_a_champion_names_the_missing_pointer(layout: Layout) -> None:
    make_attempt(layout, "BTCUSDT", days_ago(1))
    with pytest.raises(ModelLoadError, match="BTCUSDT has no champion .*CHAMPION"):
        load_model(layout.root, "BTCUSDT")


def test_load_model_names_a_trainer_that_has_no_load_hook(layout: Layout) -> None:
    folder = make_attempt(layout, "BTCUSDT", days_ago(1))
    promote(layout, folder, days_ago(1), trainer="tests.support.loadable_plugins:without_load")
    with pytest.raises(ModelLoadError, match="without_load has no load hook"):
        load_model(layout.root, "BTCUSDT")


def test_load_model_names_a_trainer_that_cannot_be_imported(layout: Layout) -> None:
    folder = make_attempt(layout, "BTCUSDT", days_ago(1))
    promote(layout, folder, days_ago(1), trainer="no_such_package.trainer:train")
    with pytest.raises(ModelLoadError, match="cannot import no_such_package.trainer"):
        load_model(layout.root, "BTCUSDT")


def test_load_attempt_loads_a_challenger_with_the_trainer_named(layout: Layout) -> None:
    folders = a_symbol_with_history(layout)
    model = load_attempt(folders["yesterday"], trainer="tests.support.loadable_plugins:train")
    assert model.metrics["test_log_loss"] == 0.58


def test_importing_retrainer_does_not_import_the_registry_until_a_model_is_loaded() -> None:
    code = (
        "import sys, retrainer\n"
        "assert not [m for m in sys.modules if m.startswith('retrainer.registry')]\n"
        "assert retrainer.load_model.__module__ == 'retrainer.registry.loader'\n"
        "print(retrainer.__version__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=cli_env(), capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == retrainer.__version__


def test_a_model_trained_by_a_night_loads_after_its_promotion(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = write_config(
        tmp_path / "c.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": "top1"},
            "data": {"path": str(small_data)},
            "trainer": {"plugin": "tests.support.loadable_plugins:train"},
            "promote": {"mode": "never"},
        },
    )
    assert run_cli("run", "--config", str(config)).returncode == 0
    layout = Layout(tmp_path / "root")
    day = run_day(now_utc())
    (entry,) = read_ledger(layout.status_path(day), layout.journal_path(day)).entries.values()
    assert entry.artifact_dir is not None
    promote(layout, layout.root / entry.artifact_dir, now_utc())

    listed = run_cli("models", "--config", str(config), "--json")
    model = load_model(layout.root, entry.symbol)

    assert listed.returncode == 0, listed.stderr
    (symbol,) = json.loads(listed.stdout)["symbols"]
    assert symbol["champion"]["folder"] == entry.artifact_dir
    bars = pd.read_parquet(small_data / f"{entry.symbol}.parquet")
    assert model.predict_proba(bars).between(0, 1).all()


# --- the default trainer's models ----------------------------------------------------------


def test_a_default_trainer_champion_loads_and_predicts(tmp_path: Path) -> None:
    from retrainer.training.trainer import train
    from tests.support.training_data import make_context

    layout = Layout(tmp_path / "root")
    folder = layout.model_dir("TESTUSDT") / "20261209_020000Z"
    metrics = train(make_context(folder, params={**TINY_TRAINER, "hidden_sizes": [8]}))
    write_manifest(folder, durable=False)
    promote(layout, folder, days_ago(1), trainer="")  # no trainer named: the default one

    model = retrainer.load_model(layout.root, "TESTUSDT")
    prob = model.predict_proba(make_bars())

    assert model.metrics == metrics
    assert len(prob) > 0 and prob.between(0, 1).all()
    assert list(model.features(make_bars()).columns[1:]) == model.config["features"]
