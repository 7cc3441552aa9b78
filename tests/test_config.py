"""Settings: defaults ← file ← environment ← flags, with errors that name the key."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from retrainer.base.config import Mode, Settings, load_settings, read_config_file
from retrainer.base.errors import BadInputError


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_the_commented_template_holds_exactly_the_defaults(tmp_path: Path) -> None:
    text = resources.files("retrainer").joinpath("default_config.toml").read_text("utf-8")
    settings = load_settings(write(tmp_path / "c.toml", text), environ={})
    defaults = Settings()
    assert settings.run.model_copy(update={"root": defaults.run.root}) == defaults.run
    assert settings.costs == defaults.costs and settings.trainer == defaults.trainer
    assert settings.run.root == tmp_path  # relative to the file's folder


def test_flags_beat_the_environment_which_beats_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[run]\nmode = "sequential"\nretries = 5\n')
    env = {"RETRAINER_RUN__MODE": "parallel", "RETRAINER_RUN__RETRIES": "7"}
    settings = load_settings(config, {"run": {"mode": "hybrid", "retries": None}}, environ=env)
    assert settings.run.mode is Mode.HYBRID
    assert settings.run.retries == 7


def test_relative_paths_in_a_file_are_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    config = write(tmp_path / "etc" / "c.toml", '[data]\npath = "../bars"\n')
    assert read_config_file(config)["data"]["path"] == tmp_path / "bars"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[run]\nmax_concurrent = 0\n", "run.max_concurrent"),
        ("[run]\ntimeout_minutes = -1\n", "run.timeout_minutes"),
        ("[run]\nretries = -1\n", "run.retries"),
        ('[run]\nmode = "fastest"\n', "run.mode"),
        ("[run]\nbogus = 1\n", "run.bogus: unknown key"),
        ("[nonsense]\nx = 1\n", "nonsense: unknown key"),
        ("[run\n", "not valid TOML"),
        ('[storage]\nkind = "local"\n', "storage.path is required"),
    ],
)
def test_a_bad_config_is_bad_input_naming_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(BadInputError, match=named.replace(".", r"\.")):
        load_settings(write(tmp_path / "c.toml", text), environ={})


def test_a_missing_config_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="cannot be read"):
        load_settings(tmp_path / "absent.toml", environ={})


def test_the_config_env_variable_names_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", "[run]\nretries = 9\n")
    assert load_settings(None, environ={"RETRAINER_CONFIG": str(config)}).run.retries == 9


def test_a_symbols_csv_in_a_file_is_relative_to_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "c.toml", '[run]\nsymbols = "lists/majors.csv"\n')
    assert read_config_file(config)["run"]["symbols"] == str(tmp_path / "lists" / "majors.csv")
