"""Whatever flags and config files a user throws at it, the CLI answers with a message and
a documented exit code: never a Python traceback."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from retrainer.base.exitcodes import ExitCode
from retrainer.cli.app import app
from tests.conftest import write_config

# A dry run plans without writing, and a plan is either made (0) or refused as bad input (2).
EXPECTED_CODES = {ExitCode.OK, ExitCode.BAD_INPUT}

# Random text, plus the strings that break naive path and number handling.
nasty = st.sampled_from(
    [
        "a\x00b",
        "\x00",
        "..",
        "/",
        "~",
        "~nobody/x",
        " ",
        "-1",
        "1e999",
        "0x10",
        "NaN",
        "x" * 300,
        "a.csv",
        "/nonexistent/s.csv",
        "é",
    ]
)
text = st.one_of(st.text(st.characters(exclude_categories=["Cs"]), max_size=16), nasty)
numbers = st.one_of(st.integers(-(10**12), 10**12), st.floats(allow_nan=True, allow_infinity=True))
junk = st.one_of(text, numbers.map(str))
symbols = st.one_of(
    st.sampled_from(["top3", "top0", "top-1", "topx", "top999", ",", ""]),
    st.lists(st.sampled_from(["SYM000", "SYM001", "NOPE"]), min_size=1).map(",".join),
    junk,
)
FLAGS: dict[str, st.SearchStrategy[str]] = {
    "--mode": st.one_of(st.sampled_from(["sequential", "parallel", "hybrid", "HYBRID"]), junk),
    "--max_concurrent": st.one_of(st.integers(-3, 10**9).map(str), junk),
    "--timeout_minutes": st.one_of(numbers.map(str), junk),
    "--retries": st.one_of(st.integers(-3, 10**6).map(str), junk),
    "--max_memory_mb": st.one_of(st.integers(-3, 10**9).map(str), junk),
    "--symbols": symbols,
    "--driver": st.one_of(st.sampled_from(["local", "ray"]), junk),
}
SECTIONS = {
    "run": [
        "mode",
        "max_concurrent",
        "symbols",
        "timeout_minutes",
        "retries",
        "driver",
        "root",
        "seed",
        "kill_grace_s",
        "stop_grace_s",
        "max_memory_mb",
        "backoff_base_s",
    ],
    "data": ["path", "min_rows", "topn_window_days", "on_bad", "columns", "timestamp_unit"],
    "costs": ["taker_fee_bps", "maker_fee_bps", "spread_window_days", "overrides"],
    "trainer": ["plugin", "params"],
    "storage": ["kind", "path"],
    "logging": ["level"],
}
values = st.one_of(
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True),
    text,
    st.booleans(),
    st.lists(st.integers(-5, 5), max_size=3),
    st.dictionaries(st.sampled_from(["a", "x"]), st.integers(), max_size=2),
)
config_tables = st.dictionaries(
    st.one_of(st.sampled_from(sorted(SECTIONS)), st.from_regex(r"[a-z]{1,8}", fullmatch=True)),
    st.dictionaries(
        st.one_of(
            st.sampled_from(sorted({k for ks in SECTIONS.values() for k in ks})),
            st.from_regex(r"[a-z_]{1,10}", fullmatch=True),
        ),
        values,
        max_size=4,
    ),
    max_size=4,
)
config_files = st.one_of(st.none(), config_tables, text)


def invoke(args: list[str]) -> tuple[int, str, BaseException | None]:
    result = CliRunner().invoke(app, args)
    unexpected = None if isinstance(result.exception, SystemExit | None) else result.exception
    return result.exit_code, result.output, unexpected


def assert_answered_cleanly(code: int, output: str, error: BaseException | None) -> None:
    event(f"exit {code}")  # shown by --hypothesis-show-statistics
    assert error is None, f"uncaught {type(error).__name__}: {error}"
    assert "Traceback (most recent call last)" not in output, output
    assert code in EXPECTED_CODES, f"exit {code}: {output}"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    flags=st.dictionaries(st.sampled_from(sorted(FLAGS)), st.just(""), max_size=4).flatmap(
        lambda chosen: st.fixed_dictionaries({f: FLAGS[f] for f in chosen})
    ),
    config=config_files,
    pass_data=st.booleans(),
)
def test_random_flags_and_configs_get_a_message_and_a_documented_exit_code(
    small_data: Path, flags: dict[str, str], config: Any, pass_data: bool
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        args = ["run", "--dry_run", "--root", folder]
        if pass_data:
            args += ["--data", str(small_data)]
        for flag, value in flags.items():
            args += [f"{flag}={value}"]  # '=' keeps a value that starts with '-' a value
        if isinstance(config, dict):
            args += ["--config", str(write_config(Path(folder) / "c.toml", config))]
        elif isinstance(config, str):
            (Path(folder) / "c.toml").write_text(config, encoding="utf-8")
            args += ["--config", str(Path(folder) / "c.toml")]
        assert_answered_cleanly(*invoke(args))


@settings(max_examples=30, deadline=None)
@given(day=junk)
def test_verify_answers_any_run_name_cleanly(day: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        code, output, error = invoke(["verify", "--root", folder, f"--run={day}"])
        assert error is None, f"uncaught {type(error).__name__}: {error}"
        assert "Traceback (most recent call last)" not in output, output
        assert code in {ExitCode.OK, ExitCode.SOME_FAILED, ExitCode.BAD_INPUT}, output
