"""summary/<day>/engine_summary.json: what the night did, for people and their tools.

Each symbol's status is its ledger state after this run, but for one the run was to train
and never started (it was stopped, or broke off, first): that one is `not_started`, and
what the ledger still holds for it (an earlier success of the day, with its own time and
run) stays the truth, named under `ledger_state`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from retrainer.job.search import search_summary
from retrainer.ledger.entries import FAILED_STATES, ItemState, LedgerEntry
from retrainer.plan.planner import Action, Plan, PlanItem
from retrainer.registry.gate import Decision

# A symbol this run was to train and never started: a summary status, not a ledger state.
NOT_STARTED = "not_started"


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
    if entry.promotion is not None:
        out["promotion"] = entry.promotion
    if not skipped and entry.state is not ItemState.SUCCESS and last is not None:
        out["reason"] = last.reason
        out["error_type"] = last.error_type
    return out


def unstarted_summary(
    entry: LedgerEntry | None, why: str, ended: str, reason: str | None = None
) -> dict[str, Any]:
    """A symbol the run was to train but never started: what the ledger holds stays.
    reason: why it was not started (default: the run ended first)."""
    out: dict[str, Any] = {
        "status": NOT_STARTED,
        "attempts": 0,
        "why": why,
        "reason": reason or f"not started: the run {ended} first",
        "ledger_state": (entry.state if entry else ItemState.PENDING).value,
    }
    if entry is not None and entry.state is ItemState.SUCCESS:  # an earlier run's model
        out.update(
            artifact_dir=entry.artifact_dir,
            metrics=_scalar_metrics(entry.metrics),
            run_id=entry.run_id,
            at=entry.updated_at,
        )
    return out


def _prepared_only(entry: LedgerEntry | None) -> bool:
    """Two stages: the item's prepare succeeded and the run ended before its train stage
    started (its entry is pending again): not started, as a queued one."""
    last = entry.last_attempt if entry is not None else None
    return (
        entry is not None
        and entry.state is ItemState.PENDING
        and last is not None
        and last.prepare_only
    )


def bad_data_summary(why: str) -> dict[str, Any]:
    """A symbol whose data file is bad: failed, with no attempt (so none is retried)."""
    return {
        "status": ItemState.FAILED.value,
        "attempts": 0,
        "minutes": None,
        "artifact_dir": None,
        "metrics": {},
        "upload": "none",
        "why": why,
        "reason": why,
        "error_type": "DataError",
    }


def build_summary(
    plan: Plan,
    entries: Mapping[str, LedgerEntry],
    attempts_this_run: Mapping[str, int],
    run: Mapping[str, Any],
    wall_s: float,
    ended: str = "ended",
    unstarted_reason: str | None = None,
) -> dict[str, Any]:
    """ended: how the run ended, for the symbols it never started ("stopped by SIGINT");
    unstarted_reason: their reason instead ("not started: deadline 06:00 passed")."""
    # Keyed by item id: the symbol for a nightly item, "BTC/w0012" for a window.
    by_symbol = {}
    for item in plan.items:
        attempts = attempts_this_run.get(item.item_id, 0)
        entry = entries.get(item.item_id)
        if item.action is Action.FAIL:
            by_symbol[item.item_id] = bad_data_summary(item.why)
        elif item.action is Action.RUN and (attempts == 0 or _prepared_only(entry)):
            by_symbol[item.item_id] = unstarted_summary(entry, item.why, ended, unstarted_reason)
            if attempts:  # two stages: prepared, its train stage never started
                by_symbol[item.item_id]["attempts"] = attempts
        else:
            by_symbol[item.item_id] = symbol_summary(
                entry, item.action is Action.SKIP, attempts, item.why
            )
        by_symbol[item.item_id].update(_model_state(item))
    states = [s["status"] for s in by_symbol.values()]
    searches = search_summary(plan, entries)
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
        "started": True,  # a night that stopped before it started: retrainer.job.invocation
        "day": plan.day,
        "total_symbols": len(plan.items),
        "succeeded": states.count(ItemState.SUCCESS.value),
        "failed": sum(states.count(s.value) for s in FAILED_STATES),
        "timed_out": states.count(ItemState.TIMEOUT.value),
        "interrupted": states.count(ItemState.INTERRUPTED.value)
        + states.count(ItemState.PENDING.value),
        "not_started": states.count(NOT_STARTED),
        "skipped": states.count(ItemState.SKIPPED.value),
        "avg_train_minutes": round(statistics.fmean(trained), 4) if trained else None,
        "median_train_minutes": round(statistics.median(trained), 4) if trained else None,
        "total_wall_minutes": round(wall_s / 60.0, 4),
        "failures": failures,
        **promotion_counts(by_symbol),
        "fresh": sum(1 for s in by_symbol.values() if s.get("fresh")),
        "stale": sorted(sym for sym, s in by_symbol.items() if s.get("stale")),
        # skipped: failed quarantine_after_nights nights in a row (until --force/unquarantine)
        "quarantined": sorted(i.symbol for i in plan.quarantined),
        "by_symbol": by_symbol,
        **({"searches": searches} if searches else {}),
    }


def _model_state(item: PlanItem) -> dict[str, Any]:
    """What the plan knew of the symbol's model and data: its champion (before this
    run), whether it was skipped as fresh, its last bar and whether that is stale."""
    out: dict[str, Any] = {
        "champion": item.champion.artifact_dir if item.champion else None,
        "last_bar": item.last_bar,
        "stale": item.stale,
    }
    if item.fresh:
        out["fresh"] = True
    if item.champion_problem:
        out["champion_problem"] = item.champion_problem
    if item.expected_s is not None:  # from past ledgers: compare with its minutes
        out["expected_s"] = round(item.expected_s, 2)
    if item.quarantine is not None:
        out["quarantined"] = True
        out["failed_nights"] = item.quarantine.failed_nights
    return out


def failure_tolerance(summary: Mapping[str, Any], ratio: float) -> dict[str, Any]:
    """The night's failures against [run] tolerated_failure_ratio: the share of the items
    it tried (trained, or failed on bad data) that failed, and how many failures the ratio
    tolerates (all of them when the share is within it, else none)."""
    failed = int(summary.get("failed") or 0)
    tried = failed + int(summary.get("succeeded") or 0)
    share = failed / tried if tried else 0.0
    return {
        "failure_ratio": round(share, 4),
        "tolerated_failure_ratio": ratio,
        "tolerated_failures": failed if failed and share <= ratio else 0,
    }


def retry_budget_summary(budget: int | None, spent: int, denied: list[str]) -> dict[str, Any]:
    """[run] retry_budget: the retries the run spent, and the items left without one."""
    return {"budget": budget, "spent": spent, "left_without_retry": sorted(denied)}


def promotion_counts(by_symbol: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """How the gate judged this run's successes: promoted, first_model, kept_champion,
    not_promoted, and why each kept champion was kept."""
    decisions = [
        (sym, s["promotion"])
        for sym, s in by_symbol.items()
        if s["status"] == ItemState.SUCCESS.value and isinstance(s.get("promotion"), dict)
    ]
    counts = {d.value: 0 for d in Decision}
    for _, promotion in decisions:
        counts[promotion["decision"]] = counts.get(promotion["decision"], 0) + 1
    kept = {
        sym: promotion.get("reason", "")
        for sym, promotion in decisions
        if promotion["decision"] in (Decision.KEPT_CHAMPION, Decision.NOT_PROMOTED)
    }
    return {"promotions": counts, "champions_kept": kept}
