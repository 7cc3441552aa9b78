"""A trainer's error: the attempt's log keeps its whole traceback, the ledger the short one.
Through the real `retrainer` command."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO, RunCli, read_json, write_config

DEPTH = 12  # more frames than the ledger keeps (STACK_FRAMES_KEPT = 8)

# level_11 calls level_10 … level_0, which raises: every frame has a name of its own.
DEEP = "\n".join(
    [
        "def level_0():",
        "    raise ValueError('broken at the bottom of the trainer')",
        *(f"def level_{n}():\n    return level_{n - 1}()" for n in range(1, DEPTH)),
        "def train(ctx):",
        f"    return level_{DEPTH - 1}()",
        "",
    ]
)


def test_a_trainer_error_keeps_its_whole_traceback_in_the_attempt_log(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "deep.py").write_text(DEEP)
    config = write_config(
        tmp_path / "c.toml",
        {
            "run": {"root": str(tmp_path / "root"), "symbols": "BTCUSDT", "retries": 0},
            "data": {"path": str(small_data)},
            "trainer": {"plugin": "deep:train"},
        },
    )

    result = run_cli(
        "run", "--config", str(config), env={"PYTHONPATH": f"{tmp_path / 'plugins'}:{REPO}"}
    )

    assert result.returncode == 1, result.stdout + result.stderr
    (log,) = (tmp_path / "root" / "logs").glob("*/BTCUSDT/attempt-1.log")
    text = log.read_text()
    assert "Traceback (most recent call last):" in text
    for n in range(DEPTH):
        assert f"in level_{n}\n" in text, f"level_{n} missing from the attempt log"
    assert "in train\n" in text
    assert text.rstrip().endswith("ValueError: broken at the bottom of the trainer")
    # The ledger keeps the short one: the last 8 frames, innermost last.
    (status,) = (tmp_path / "root" / "runs").glob("*/status.json")
    attempt = read_json(status)["symbols"]["BTCUSDT"]["attempts"][0]
    assert len(attempt["stack"]) == 8 and attempt["stack"][-1].endswith("in level_0")
    assert attempt["reason"] == "ValueError: broken at the bottom of the trainer"
