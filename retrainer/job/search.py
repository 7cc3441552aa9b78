"""The choice of a per-symbol parameter search (docs/search.md): the night's challenger.

A listener placed first, in front of the PromotionListener it wraps. Every event of an
item that is no search candidate passes straight through. A candidate's success is not
judged by the gate: once every candidate of its symbol has ended (succeeded, or failed
for good: a retry still pending is not an end), the listener picks the best success by
the VALIDATION metric of each candidate's metrics.json ([search] metric, never a test
figure: the test span is the gate's, and choosing on it would leak it into the choice),
writes the symbol's search record, runs/<day>/search/<SYMBOL>.json, and hands only the
winner to the gate, which judges it as the night's challenger. Ties go to the lowest
candidate name; a missing or non-finite metric is never chosen; a symbol whose every
candidate failed has no challenger (its champion stays).

When the night's loop ends (its drain), a symbol whose candidates did not all end (the
run was stopped, or its deadline passed) is decided on the candidates that did: the ones
never started are not waited for, and the record says the search is incomplete; a rerun
resumes it (done candidates are skipped) and decides again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import structlog

from retrainer.base.artifacts import Layout, atomic_write_json, read_json_object
from retrainer.base.clock import iso, now_utc
from retrainer.base.config import SearchSettings
from retrainer.engine.events import ItemListener
from retrainer.ledger.entries import FAILED_STATES, ItemState, LedgerEntry
from retrainer.ledger.journal import Ledger
from retrainer.plan.planner import Action, Plan, PlanItem

SEARCH_CHOSEN = "search_chosen"
SEARCH_FAILED = "search_failed"
SEARCH_FORMAT = "retrainer.search/1"


def search_record_path(layout: Layout, day: str, symbol: str) -> Path:
    return layout.run_dir(day) / "search" / f"{symbol}.json"


def read_search_record(layout: Layout, day: str, symbol: str) -> dict[str, Any] | None:
    return read_json_object(search_record_path(layout, day, symbol))


def searched(plan: Plan) -> dict[str, list[PlanItem]]:
    """Each searched symbol's candidate items, in candidate order."""
    out: dict[str, list[PlanItem]] = {}
    for item in plan.items:
        if item.candidate is not None:
            out.setdefault(item.symbol, []).append(item)
    return out


def metric_value(metrics: Mapping[str, Any] | None, metric: str) -> float | None:
    """The candidate's figure, or None when it is missing or not a finite number."""
    value = (metrics or {}).get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def best_of(values: Mapping[str, float | None], direction: str) -> str | None:
    """The best candidate by value (lowest for "min"), ties to the lowest name."""
    scored = [
        (v if direction == "min" else -v, name) for name, v in values.items() if v is not None
    ]
    return min(scored)[1] if scored else None


class SearchListener(ItemListener):
    def __init__(
        self,
        plan: Plan,
        ledger: Ledger,
        search: SearchSettings,
        run_id: str,
        promotion: ItemListener,
    ) -> None:
        self._plan, self._ledger, self._search = plan, ledger, search
        self._run_id, self._promotion = run_id, promotion
        self._groups = searched(plan)
        self._items = {i.item_id: i for items in self._groups.values() for i in items}
        # Done earlier today and verified: ended before this run began.
        self._ended = {i.item_id for i in self._items.values() if i.action is Action.SKIP}
        self._started: set[str] = set()
        self._decided: set[str] = set()
        self._log = structlog.get_logger()

    # -- events --------------------------------------------------------------------
    def attempt_started(self, item_id: str, out_dir: Path) -> None:
        self._started.add(item_id)
        self._promotion.attempt_started(item_id, out_dir)

    def attempt_ended(self, item_id: str, out_dir: Path) -> None:
        self._promotion.attempt_ended(item_id, out_dir)

    def item_succeeded(self, item_id: str, out_dir: Path, files: Sequence[Path]) -> None:
        item = self._items.get(item_id)
        if item is None:
            self._promotion.item_succeeded(item_id, out_dir, files)
            return
        if item.action is Action.RUN and item_id not in self._started:
            return  # an earlier success of the day that this run trains again (--force)
        self._ended.add(item_id)
        self._maybe_decide(item.symbol, final=False)

    def item_failed(self, item_id: str, reason: str) -> None:
        item = self._items.get(item_id)
        if item is None:
            self._promotion.item_failed(item_id, reason)
            return
        self._ended.add(item_id)
        self._maybe_decide(item.symbol, final=False)

    def poll(self) -> None:
        self._promotion.poll()

    def drain(self) -> None:
        """The loop is over: decide every search still open on what ended."""
        for symbol in self._groups:
            self._maybe_decide(symbol, final=True)
        self._promotion.drain()

    # -- the choice ----------------------------------------------------------------
    def _maybe_decide(self, symbol: str, final: bool) -> None:
        if symbol in self._decided:
            return
        items = self._groups[symbol]
        complete = all(i.item_id in self._ended for i in items)
        if not complete and not final:
            return
        self._decided.add(symbol)
        entries = {i.candidate or "": self._ledger.get(i.item_id) for i in items}
        rows = [self._row(i, entries[i.candidate or ""]) for i in items]
        values = {r["candidate"]: r["metric"] for r in rows if r["state"] == "success"}
        chosen = best_of(values, self._search.direction)
        record = {
            "format": SEARCH_FORMAT,
            "symbol": symbol,
            "day": self._plan.day,
            "run_id": self._run_id,
            "decided_at": iso(now_utc()),
            "method": self._search.method,
            "metric": self._search.metric,
            "direction": self._search.direction,
            "complete": complete,
            "total": len(items),
            "done": sum(1 for r in rows if r["state"] == "success"),
            "failed": sum(1 for r in rows if r["state"] in {s.value for s in FAILED_STATES}),
            "chosen": chosen,
            "chosen_item": f"{symbol}/{chosen}" if chosen else None,
            "best_metric": values.get(chosen) if chosen else None,
            "why": self._why(rows, chosen, complete),
            "candidates": rows,
        }
        atomic_write_json(search_record_path(self._plan.layout, self._plan.day, symbol), record)
        if chosen is None:
            self._log.warning(SEARCH_FAILED, symbol=symbol, why=record["why"])
            return
        self._log.info(
            SEARCH_CHOSEN,
            symbol=symbol,
            chosen=chosen,
            metric=record["best_metric"],
            why=record["why"],
        )
        winner = entries[chosen]
        if winner is None or winner.artifact_dir is None or winner.promotion is not None:
            return  # judged already (a rerun of a decided search)
        folder = self._plan.layout.root / winner.artifact_dir
        self._promotion.item_succeeded(f"{symbol}/{chosen}", folder, [])

    def _row(self, item: PlanItem, entry: LedgerEntry | None) -> dict[str, Any]:
        state = entry.state.value if entry is not None else ItemState.PENDING.value
        if item.item_id not in self._ended and state == ItemState.SUCCESS.value:
            state = ItemState.PENDING.value  # trained again by this run and not ended
        metrics = None
        if entry is not None and entry.artifact_dir and state == ItemState.SUCCESS.value:
            folder = self._plan.layout.root / entry.artifact_dir
            metrics = read_json_object(folder / "metrics.json") or dict(entry.metrics or {})
        value = metric_value(metrics, self._search.metric)
        last = entry.last_attempt if entry is not None else None
        return {
            "candidate": item.candidate,
            "item_id": item.item_id,
            "params": {k: v for k, v in (item.params or {}).items() if k in self._search.space},
            "state": state,
            "metric": value,
            "artifact_dir": entry.artifact_dir if entry is not None else None,
            "reason": last.reason if last is not None and state != "success" else None,
        }

    def _why(self, rows: list[dict[str, Any]], chosen: str | None, complete: bool) -> str:
        metric, word = (
            self._search.metric,
            ("lowest" if self._search.direction == "min" else "highest"),
        )
        ok = [r for r in rows if r["state"] == "success"]
        scored = [r for r in ok if r["metric"] is not None]
        tail = "" if complete else f"; the night ended with {len(rows) - len(ok)} not done"
        if chosen is None:
            if not ok:
                return f"no candidate succeeded ({len(rows)} tried){tail}"
            return f"no candidate reported a finite {metric}{tail}"
        return f"{word} {metric} of {len(scored)} scored candidates{tail}"


def search_summary(plan: Plan, entries: Mapping[str, LedgerEntry]) -> dict[str, Any]:
    """engine_summary.json's `searches`: each searched symbol's counts and its choice."""
    out: dict[str, Any] = {}
    failed = {s.value for s in FAILED_STATES}
    for symbol, items in searched(plan).items():
        states = [(entries.get(i.item_id) or None) for i in items]
        record = read_search_record(plan.layout, plan.day, symbol) or {}
        out[symbol] = {
            "total": len(items),
            "done": sum(1 for e in states if e is not None and e.state is ItemState.SUCCESS),
            "failed": sum(1 for e in states if e is not None and e.state.value in failed),
            "chosen": record.get("chosen"),
            "chosen_item": record.get("chosen_item"),
            "metric": record.get("metric"),
            "best_metric": record.get("best_metric"),
            "complete": record.get("complete"),
            "why": record.get("why"),
        }
    return out
