"""`retrainer backtest`: a walk-forward backtest run through a night's machinery.

Each (symbol, window) is an item (plan/backtest.py) with everything an item has: its own
killable process, deadline, memory cap, retries, ledger entry and checksummed folder. When
the windows have run, the backtest is assembled from what verifies:

    backtests/<name>/forecasts/<SYMBOL>.parquet   the symbol's out-of-sample forecasts, all
                                                  its windows in time order (one dataset)
    backtests/<name>/backtest_summary.json        per symbol: the walk-forward metrics over
                                                  the concatenated forecasts (the trainer's
                                                  score_forecasts), each window's metrics,
                                                  what is missing and why

A symbol with a window that failed or has not run is assembled from the others and says
which are missing (`complete: false`): nothing is silently left out.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from retrainer.base.artifacts import (
    BacktestLayout,
    atomic_write_bytes,
    atomic_write_json,
    read_json_object,
    verify_manifest,
)
from retrainer.base.clock import iso, now_utc
from retrainer.base.config import Settings
from retrainer.job.nightly import Work
from retrainer.ledger.entries import ItemState
from retrainer.ledger.journal import read_ledger
from retrainer.plan.backtest import (
    FINGERPRINT_FILE,
    backtest_layout,
    build_backtest_plan,
    fingerprint_of,
)
from retrainer.plan.planner import Action, Plan, PlanItem
from retrainer.training.contract import Trainer
from retrainer.training.forecasts import FORECASTS_FILE, forecasts_to_parquet

SUMMARY_FORMAT = "retrainer.backtest/1"
# A window's figures shown beside it in the summary and the report, where its trainer
# reports them (the default trainer: accuracy edge, Sharpe; the quantile one: pinball).
WINDOW_FIGURES = (
    "accuracy_edge",
    "test_accuracy",
    "majority_rate",
    "net_sharpe",
    "gross_sharpe",
    "trades",
    "pinball_mean",
    "baseline_pinball_mean",
    "pinball_skill",
    "best_val_loss",
    "forecast_rows",
)


def backtest_work(settings: Settings) -> Work:
    return Work(
        backtest_layout,
        build_backtest_plan,
        preload_bars=True,
        begin=lambda plan: _keep_fingerprint(plan, settings),
        finish=assemble,
        monitored=False,
    )


def _keep_fingerprint(plan: Plan, settings: Settings) -> None:
    layout = plan.layout
    assert isinstance(layout, BacktestLayout)
    kept = fingerprint_of(plan.trainer, plan.trainer_params, settings)
    atomic_write_json(layout.home / FINGERPRINT_FILE, kept.to_dict())


def assemble(plan: Plan, trainer: Trainer) -> dict[str, Any]:
    """Write each symbol's forecasts and the backtest's summary from the windows that
    verify; return the summary."""
    layout = plan.layout
    assert isinstance(layout, BacktestLayout)
    entries = read_ledger(layout.status_path(""), layout.journal_path("")).entries
    score = getattr(trainer, "score_forecasts")  # noqa: B009 - the plan checked it exists
    by_symbol: dict[str, list[PlanItem]] = {}
    skipped: dict[str, str] = {}
    for item in plan.items:
        if item.window is None:
            skipped[item.symbol] = item.why
        else:
            by_symbol.setdefault(item.symbol, []).append(item)
    symbols: dict[str, Any] = {}
    layout.forecasts_dir().mkdir(parents=True, exist_ok=True)
    for symbol, items in by_symbol.items():
        frames, windows, missing = [], [], []
        for item in items:
            window = _window_record(item, entries.get(item.item_id), layout)
            windows.append(window)
            if window["state"] != ItemState.SUCCESS.value or not window.get("verified"):
                missing.append(f"{item.item_id}: {window.get('why') or window['state']}")
                continue
            frames.append(pd.read_parquet(layout.root / window["artifact_dir"] / FORECASTS_FILE))
        record: dict[str, Any] = {
            "windows_total": len(items),
            "windows_done": len(frames),
            "complete": not missing,
            "missing": missing,
            "windows": windows,
        }
        costs = items[0].costs
        if frames and costs is not None:
            forecasts = pd.concat(frames, ignore_index=True)
            forecasts = forecasts.sort_values(["time", "horizon", "quantile"], kind="stable")
            path = layout.forecasts_dir() / f"{symbol}.parquet"
            atomic_write_bytes(path, forecasts_to_parquet(forecasts.reset_index(drop=True)))
            record["forecasts"] = layout.relative(path)
            record["costs"] = costs.to_dict()
            record["metrics"] = score(forecasts, costs)
        symbols[symbol] = record
    summary = {
        "format": SUMMARY_FORMAT,
        "name": layout.name,
        "updated_at": iso(now_utc()),
        "trainer": plan.trainer,
        "params": dict(plan.trainer_params),
        "windows_total": sum(s["windows_total"] for s in symbols.values()),
        "windows_done": sum(s["windows_done"] for s in symbols.values()),
        "complete": all(s["complete"] for s in symbols.values()),
        "symbols": symbols,
        "skipped": skipped,
    }
    atomic_write_json(layout.backtest_summary_path(), summary)
    return summary


def _window_record(item: PlanItem, entry: Any, layout: BacktestLayout) -> dict[str, Any]:
    assert item.window is not None
    window = item.window
    record: dict[str, Any] = {
        "window": window.name,
        "train_first": window.train_first,
        "train_last": window.train_last,
        "forecast_first": window.forecast_first,
        "forecast_last": window.forecast_last,
        "state": entry.state.value if entry is not None else "not_run",
    }
    if entry is None:
        record["why"] = "not run yet" if item.action is Action.RUN else item.why
        return record
    record["attempts"] = len(entry.attempts)
    if entry.state is not ItemState.SUCCESS or not entry.artifact_dir:
        last = entry.last_attempt
        record["why"] = (last.reason if last is not None else None) or entry.why
        return record
    folder = layout.root / entry.artifact_dir
    problems = verify_manifest(folder, entry.manifest_sha256)
    record.update(artifact_dir=entry.artifact_dir, verified=not problems)
    if problems:
        record["why"] = f"artifacts do not verify: {problems[0]}"
        return record
    metrics = read_json_object(folder / "metrics.json") or {}
    record["metrics"] = {k: metrics[k] for k in WINDOW_FIGURES if k in metrics}
    return record
