"""`retrainer prune --keep-days N`: old attempt folders go, locally and remotely; the
champion, what a kept day's ledger names and what is recent stay; never beside a night."""

from __future__ import annotations

import json
import shutil
import signal
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from retrainer.base.artifacts import Layout
from retrainer.base.clock import run_day
from retrainer.cli.app import app
from retrainer.job import retention
from retrainer.job.retention import PRUNING_PREFIX, prune
from retrainer.mirror.storage.protocol import StorageClient
from retrainer.mirror.uploads import PENDING_MARKER
from retrainer.registry.models import folder_bytes
from tests.conftest import RunCli
from tests.support.dropbox_server import DropboxTestServer
from tests.support.model_folders import make_attempt, promote, record_day
from tests.support.processes import assert_all_dead, recorded_pids, wait_for_pids
from tests.test_item_faults import faulty_config, start_scheduler, symbols_of
from tests.test_storage_delete import make_backend

NOW = datetime(2026, 12, 10, 12, 0, tzinfo=UTC)


def days_ago(days: float, now: datetime = NOW) -> datetime:
    return now - timedelta(days=days)


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "root")


@pytest.fixture(params=["local", "s3", "dropbox"])
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> StorageClient:
    return make_backend(request, tmp_path, monkeypatch).storage


def a_root_with_history(layout: Layout, now: datetime = NOW) -> dict[str, Path]:
    """Attempt folders of two symbols, with the champion, a ledger of a kept day naming an
    old folder, a ledger of a day past the window, and recent work."""
    folders = {
        "champion": make_attempt(layout, "BTCUSDT", days_ago(50, now)),
        "named": make_attempt(layout, "BTCUSDT", days_ago(45, now)),
        "old": make_attempt(layout, "BTCUSDT", days_ago(40, now)),
        "old_failed": make_attempt(layout, "BTCUSDT", days_ago(35, now), success=False),
        "recent": make_attempt(layout, "BTCUSDT", days_ago(2, now)),
        "eth_old": make_attempt(layout, "ETHUSDT", days_ago(40, now)),
    }
    promote(layout, folders["champion"], days_ago(49, now))
    record_day(layout, days_ago(5, now), [folders["named"]])  # a success carried forward
    record_day(layout, days_ago(40, now), [folders["old"], folders["eth_old"]])  # too old
    return folders


def relative(layout: Layout, *folders: Path) -> list[str]:
    return sorted(layout.relative(f) for f in folders)


# --- local ---------------------------------------------------------------------------------


def test_prune_removes_old_folders_and_keeps_the_champion_the_named_and_the_recent(
    layout: Layout,
) -> None:
    f = a_root_with_history(layout)
    sizes = sum(folder_bytes(f[k]) for k in ("old", "old_failed", "eth_old"))

    report = prune(layout, 30, now=NOW)

    assert report.ok
    assert sorted(r.folder for r in report.removed) == relative(
        layout, f["old"], f["old_failed"], f["eth_old"]
    )
    assert report.bytes_freed == sizes > 0
    why = {k.folder: k.why for k in report.kept}
    assert why == {
        layout.relative(f["champion"]): "champion",
        layout.relative(f["named"]): f"named by the ledger of {run_day(days_ago(5))}",
        layout.relative(f["recent"]): "too recent",
    }
    for name, folder in f.items():
        assert folder.exists() == (name in ("champion", "named", "recent")), name
    assert not list(layout.root.glob(f"models/*/{PRUNING_PREFIX}*"))
    assert (layout.model_dir("BTCUSDT") / "CHAMPION").is_file()
    assert layout.run_dir(run_day(days_ago(40))).is_dir()  # the ledgers stay: the history


def test_a_dry_run_removes_nothing_and_says_what_would_go(layout: Layout) -> None:
    f = a_root_with_history(layout)

    report = prune(layout, 30, now=NOW, dry_run=True)

    assert len(report.removed) == 3 and all(folder.exists() for folder in f.values())
    assert report.lines()[-1].startswith("would remove 3 folder(s)")
    assert not layout.lock_path().exists()  # a dry run reads only: no lock taken


def test_a_day_whose_uploads_are_pending_keeps_what_its_ledger_names(layout: Layout) -> None:
    f = a_root_with_history(layout)
    (layout.run_dir(run_day(days_ago(40))) / PENDING_MARKER).write_text("pending\n")

    report = prune(layout, 30, now=NOW)

    assert relative(layout, f["old_failed"]) == [r.folder for r in report.removed]
    assert f["old"].exists() and f["eth_old"].exists()


def test_a_symbol_whose_champion_cannot_be_read_keeps_every_folder(layout: Layout) -> None:
    f = a_root_with_history(layout)
    (layout.model_dir("BTCUSDT") / "CHAMPION").write_text("{torn")

    report = prune(layout, 30, now=NOW)

    assert [r.folder for r in report.removed] == relative(layout, f["eth_old"])
    assert f["old"].exists() and not report.ok
    assert report.failures[0].folder == "BTCUSDT"
    assert "nothing of it removed" in report.failures[0].reason


def test_a_folder_that_cannot_be_removed_is_reported_and_the_others_go(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    f = a_root_with_history(layout, now=datetime.now(UTC))  # the command's own clock
    remove = retention._remove

    def stuck_on_old(folder: Path) -> None:
        if folder == f["old"]:
            raise PermissionError(1, "Operation not permitted", str(folder))
        remove(folder)

    monkeypatch.setattr(retention, "_remove", stuck_on_old)
    result = CliRunner().invoke(app, ["prune", "--keep-days", "30", "--root", str(layout.root)])

    assert result.exit_code == 1, result.output
    assert f"failed (local): {layout.relative(f['old'])}: Operation not permitted" in result.output
    assert not f["old_failed"].exists() and not f["eth_old"].exists()


def test_a_prune_that_died_midway_is_finished_by_the_next(layout: Layout) -> None:
    f = a_root_with_history(layout)
    half = f["old"].rename(f["old"].with_name(PRUNING_PREFIX + f["old"].name))

    prune(layout, 30, now=NOW)

    assert not half.exists()


def test_the_prune_command_as_json_counts_what_went(layout: Layout, run_cli: RunCli) -> None:
    f = a_root_with_history(layout, now=datetime.now(UTC))

    result = run_cli("prune", "--keep-days", "30", "--root", str(layout.root), "--json")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] and report["remote"] is None and not report["dry_run"]
    assert report["bytes_freed"] == sum(r["bytes"] for r in report["removed"]) > 0
    assert [r["folder"] for r in report["removed"]] == [
        layout.relative(f[k]) for k in ("old", "old_failed", "eth_old")
    ]
    assert [k["why"] for k in report["kept"]][0] == "champion"


def test_prune_with_remote_but_no_storage_is_bad_input(layout: Layout, run_cli: RunCli) -> None:
    layout.root.mkdir()
    result = run_cli("prune", "--keep-days", "30", "--remote", "--root", str(layout.root))
    assert result.returncode == 2 and "no storage is configured" in result.stderr


def test_prune_needs_at_least_one_day(layout: Layout, run_cli: RunCli) -> None:
    layout.root.mkdir()
    result = run_cli("prune", "--keep-days", "0", "--root", str(layout.root))
    assert result.returncode == 2


def test_prune_refuses_while_a_night_holds_the_lock(
    tmp_path: Path, small_data: Path, run_cli: RunCli
) -> None:
    symbol = symbols_of(small_data)[0]
    config = faulty_config(tmp_path, small_data, {symbol: "hang"}, timeout_minutes=10)
    layout = Layout(tmp_path / "root")
    old = make_attempt(layout, "OLDUSDT", datetime.now(UTC) - timedelta(days=90))
    night = start_scheduler(config, tmp_path)
    try:
        wait_for_pids(tmp_path, 1)  # the night holds the lock and trains

        refused = run_cli("prune", "--keep-days", "30", "--config", str(config))

        assert refused.returncode == 3, refused.stderr
        assert "another retrainer run holds the lock" in refused.stderr
        assert old.exists()
    finally:
        night.send_signal(signal.SIGTERM)
        night.communicate(timeout=60)
    assert_all_dead(recorded_pids(tmp_path))
    after = run_cli("prune", "--keep-days", "30", "--config", str(config))
    assert after.returncode == 0, after.stderr
    assert not old.exists()


# --- remote --------------------------------------------------------------------------------


def upload(storage: StorageClient, layout: Layout, *folders: Path) -> None:
    for folder in folders:
        for path in sorted(folder.iterdir()):
            storage.put_file(path, layout.relative(path))


def remote_folders(storage: StorageClient) -> set[str]:
    keys = storage.list_keys("models")
    return {"/".join(k.split("/")[:3]) for k in keys if k.count("/") >= 3}


def test_a_remote_prune_deletes_the_same_folders_from_the_store(
    layout: Layout, storage: StorageClient, tmp_path: Path
) -> None:
    f = a_root_with_history(layout)
    upload(storage, layout, *f.values())
    # Gone locally already (a prune without --remote): its remote copy still goes now.
    gone_locally = make_attempt(layout, "BTCUSDT", days_ago(60))
    upload(storage, layout, gone_locally)
    shutil.rmtree(gone_locally)
    # A symbol this root does not hold: its copies are none of this root's business.
    stranger = make_attempt(Layout(tmp_path / "elsewhere"), "XRPUSDT", days_ago(90))
    upload(storage, Layout(tmp_path / "elsewhere"), stranger)
    storage.put_json({"pointer": 1}, "models/BTCUSDT/CHAMPION")

    report = prune(layout, 30, now=NOW, storage=storage, remote=True)

    assert report.ok, report.failures
    went = relative(layout, f["old"], f["old_failed"], f["eth_old"], gone_locally)
    assert sorted(r.folder for r in report.remote_removed) == went
    assert remote_folders(storage) == {
        *relative(layout, f["champion"], f["named"], f["recent"]),
        "models/XRPUSDT/" + stranger.name,
    }
    assert storage.exists("models/BTCUSDT/CHAMPION")
    assert report.remote == storage.describe()


def test_a_remote_dry_run_deletes_nothing(layout: Layout, storage: StorageClient) -> None:
    f = a_root_with_history(layout)
    upload(storage, layout, *f.values())
    before = storage.list_keys("models")

    report = prune(layout, 30, now=NOW, storage=storage, remote=True, dry_run=True)

    assert len(report.remote_removed) == 3 and storage.list_keys("models") == before


def test_a_remote_failure_is_reported_stops_the_remote_prune_and_spares_the_local_one(
    layout: Layout, dropbox_server: DropboxTestServer
) -> None:
    from tests.support.storage_fixtures import dropbox_client

    storage = dropbox_client(dropbox_server)
    f = a_root_with_history(layout)
    upload(storage, layout, *f.values())
    dropbox_server.fail_next("2/files/delete_v2", 500, times=10)

    report = prune(layout, 30, now=NOW, storage=storage, remote=True)

    assert not report.ok and len(report.removed) == 3
    (failure,) = report.failures
    assert failure.where == "remote" and "the remote prune stopped" in failure.reason
    assert report.remote_removed == []
