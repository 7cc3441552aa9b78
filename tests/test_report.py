"""`retrainer report`: a self-contained page of a real run, opened in headless chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from PIL import Image

from retrainer.base.clock import now_utc, run_day
from retrainer.ledger.entries import Attempt, ItemState
from retrainer.views.report.charts import STATE_COLOURS
from retrainer.views.report.data import _lanes, gather
from tests.conftest import TINY_TRAINER, RunCli, cli_env, write_config
from tests.test_progress_status import faulty_config

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained_root(tmp_path_factory: pytest.TempPathFactory, small_data: Path) -> Path:
    """A real night with the default trainer on three symbols."""
    folder = tmp_path_factory.mktemp("report")
    config = write_config(
        folder / "retrainer.toml",
        {
            "run": {"root": str(folder / "root"), "symbols": "top3"},
            "data": {"path": str(small_data)},
            "trainer": {"params": TINY_TRAINER},
        },
    )
    run = subprocess.run(
        [sys.executable, "-m", "retrainer", "run", "--config", str(config)],
        cwd=folder,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    return folder / "root"


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    if binary is None:
        pytest.fail("chromium is not installed: `make test` installs it (Debian's package)")
    return subprocess.run(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={user_data}", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_report_renders_in_headless_chromium_with_every_chart_decoded(
    tmp_path: Path, trained_root: Path, run_cli: RunCli
) -> None:
    result = run_cli("report", "--root", str(trained_root))
    assert result.returncode == 0, result.stderr
    day = run_day(now_utc())
    page = trained_root / "reports" / day / "report.html"
    assert result.stdout.strip() == f"wrote {page}"

    dom = chromium("--dump-dom", page.as_uri(), user_data=tmp_path / "profile-dom").stdout
    assert f"retrainer report: {day}" in dom
    for heading in ("Runs", "Timeline", "Training minutes", "Net-of-cost Sharpe", "Symbols"):
        assert f"<h2>{heading}</h2>" in dom, heading
    symbols = json.loads((trained_root / "runs" / day / "status.json").read_text())["symbols"]
    assert len(symbols) == 3
    for symbol in symbols:
        assert f"<td>{symbol}</td>" in dom, symbol
    assert 'data-charts-decoded="3/3"' in dom  # the page's own check, run by the browser

    shot = tmp_path / "page.png"
    chromium(
        f"--screenshot={shot}",
        "--window-size=1200,1600",
        page.as_uri(),
        user_data=tmp_path / "profile-shot",
    )
    with Image.open(shot) as image:
        pixels = image.convert("RGB")
        colours = {pixels.getpixel((x, y)) for x in range(0, 1200, 7) for y in range(0, 1600, 7)}
    assert len(colours) > 50  # text, charts and badges, not a blank page
    assert _rgb(STATE_COLOURS["success"]) in colours  # the timeline's bars drew


def _rgb(hex_colour: str) -> tuple[int, int, int]:
    value = int(hex_colour.lstrip("#"), 16)
    return value >> 16, value >> 8 & 0xFF, value & 0xFF


def test_the_report_is_self_contained_and_keeps_its_charts_beside_it(
    tmp_path: Path, trained_root: Path, run_cli: RunCli
) -> None:
    out = tmp_path / "out"
    assert run_cli("report", "--root", str(trained_root), "--out", str(out)).returncode == 0
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)  # nothing to download
    sources = re.findall(r'<img class="chart"[^>]* src="([^"]+)"', html)
    assert len(sources) == 3
    for src, name in zip(sources, ("gantt", "minutes", "sharpe"), strict=True):
        assert src.startswith("data:image/png;base64,")
        embedded = base64.b64decode(src.split(",", 1)[1])
        assert embedded.startswith(PNG_MAGIC)
        assert embedded == (out / f"{name}.png").read_bytes()


def test_history_shows_the_key_metrics_of_a_trained_symbol(
    trained_root: Path, run_cli: RunCli
) -> None:
    day = run_day(now_utc())
    symbol = sorted(
        json.loads((trained_root / "runs" / day / "status.json").read_text())["symbols"]
    )[0]
    result = run_cli("history", symbol, "--json", "--root", str(trained_root))
    (row,) = json.loads(result.stdout)["attempts"]
    assert row["status"] == "success" and row["day"] == day
    assert set(row["metrics"]) == {
        "net_sharpe",
        "gross_sharpe",
        "net_total_return",
        "test_accuracy",
    }
    assert all(isinstance(v, float) for v in row["metrics"].values())


def test_the_timeline_puts_each_attempt_on_its_slot_coloured_by_outcome(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    config = faulty_config(
        tmp_path,
        small_data,
        {
            "BTCUSDT": "fail_once",
            "ETHUSDT": "raise",
            "SOLUSDT": "ok",
            "XRPUSDT": "ok",
            "BNBUSDT": "ok",
        },
        retries=1,
        max_concurrent=2,
    )
    assert run_cli("run", "--config", str(config)).returncode == 1
    data = gather(tmp_path / "root", None)
    assert len(data.bars) == 7  # two attempts for each failing symbol, one for the others
    assert {b.lane for b in data.bars} == {0, 1}
    for lane in (0, 1):  # a slot runs one attempt at a time
        spans = sorted((b.start, b.end) for b in data.bars if b.lane == lane)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:], strict=False))
    outcomes = {(b.symbol, b.attempt): b.state for b in data.bars}
    assert outcomes[("BTCUSDT", 1)] == "failed" and outcomes[("BTCUSDT", 2)] == "success"
    assert outcomes[("ETHUSDT", 2)] == "failed"

    assert run_cli("report", "--config", str(config)).returncode == 0
    html = (tmp_path / "root" / "reports" / run_day(now_utc()) / "report.html").read_text()
    assert "<h2>Failures</h2>" in html and "ValueError: boom from ETHUSDT" in html


def test_attempts_from_ledgers_without_a_slot_get_lanes_that_never_overlap() -> None:
    t0 = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)

    def attempt(start_s: int, end_s: int) -> Attempt:
        return Attempt(
            number=1,
            state=ItemState.SUCCESS,
            artifact_dir="",
            device="cpu",
            threads=1,
            started_at=_iso(t0 + timedelta(seconds=start_s)),
            ended_at=_iso(t0 + timedelta(seconds=end_s)),
        )

    old = [attempt(0, 10), attempt(1, 4), attempt(5, 12), attempt(11, 13)]
    assert _lanes(old, t0) == [0, 1, 1, 0]


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_report_of_a_day_without_a_ledger_is_bad_input(tmp_path: Path, run_cli: RunCli) -> None:
    result = run_cli("report", "--root", str(tmp_path), "--run", "20260101Z")
    assert result.returncode == 2 and "no run ledger for 20260101Z" in result.stderr
