"""summary/<day>/engine_summary.json: what the night did, for people and their tools."""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from retrainer.ledger.entries import FAILED_STATES, ItemState, LedgerEntry
from retrainer.plan.planner import Action, Plan


def _scalar_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    if not metrics:
        return {}
    return {k: v for k, v in metrics.items() if isinstance(v, int | float | str | bool)}


def symbol_summary(
    entry: LedgerEntry | None, skipped: bool, attempts: int, why: str
) -> dict[str, Any]:
    if entry is None:
        return {"status": ItemState.PENDING.value, "attempts": 0, "why": why}
    last = entry.last_attempt
    out: dict[str, Any] = {
        "status": ItemState.SKIPPED.value if skipped else entry.state.value,
        "attempts": attempts,
        "minutes": entry.train_minutes,
        "artifact_dir": entry.artifact_dir,
        "metrics": _scalar_metrics(entry.metrics),
        "upload": entry.upload.value,
        "why": why,
    }
    if not skipped and entry.state is not ItemState.SUCCESS and last is not None:
        out["reason"] = last.reason
        out["error_type"] = last.error_type
    return out


def build_summary(
    plan: Plan,
    entries: Mapping[str, LedgerEntry],
    attempts_this_run: Mapping[str, int],
    run: Mapping[str, Any],
    wall_s: float,
) -> dict[str, Any]:
    by_symbol = {
        item.symbol: symbol_summary(
            entries.get(item.symbol),
            item.action is Action.SKIP,
            attempts_this_run.get(item.symbol, 0),
            item.why,
        )
        for item in plan.items
    }
    states = [s["status"] for s in by_symbol.values()]
    trained = [
        s["minutes"]
        for s in by_symbol.values()
        if s["status"] == ItemState.SUCCESS.value and s["minutes"] is not None
    ]
    failures = {
        sym: s.get("reason")
        for sym, s in by_symbol.items()
        if s["status"] in {st.value for st in FAILED_STATES}
    }
    return {
        **dict(run),
        "day": plan.day,
        "total_symbols": len(plan.items),
        "succeeded": states.count(ItemState.SUCCESS.value),
        "failed": sum(states.count(s.value) for s in FAILED_STATES),
        "timed_out": states.count(ItemState.TIMEOUT.value),
        "interrupted": states.count(ItemState.INTERRUPTED.value)
        + states.count(ItemState.PENDING.value),
        "skipped": states.count(ItemState.SKIPPED.value),
        "avg_train_minutes": round(statistics.fmean(trained), 4) if trained else None,
        "median_train_minutes": round(statistics.median(trained), 4) if trained else None,
        "total_wall_minutes": round(wall_s / 60.0, 4),
        "failures": failures,
        "by_symbol": by_symbol,
    }
