"""`retrainer history SYMBOL`: every attempt of one symbol, from every day's ledger, and
each night that did not start (it trained no symbol: a row in every symbol's history)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from retrainer.base.artifacts import Layout
from retrainer.base.exitcodes import meaning
from retrainer.ledger.entries import ItemState, LedgerEntry, bad_data_mark
from retrainer.ledger.invocations import read_invocations
from retrainer.ledger.journal import read_ledger
from retrainer.views.runview import days_under

NOT_STARTED = "not started"  # a history row's status: the night of that run did not start

# The metrics an operator looks at first; others stay in metrics.json and the ledger.
KEY_METRICS = ("net_sharpe", "gross_sharpe", "net_total_return", "test_accuracy")


@dataclass(frozen=True)
class HistoryRow:
    day: str
    attempt: int  # 0: a night that did not start
    started_at: str
    status: str
    minutes: float | None
    reason: str | None
    metrics: dict[str, Any]  # the key metrics of the attempt whose artifacts were kept


def symbol_history(root: Path, symbol: str) -> list[HistoryRow]:
    layout = Layout(root)
    rows: list[HistoryRow] = []
    for day in days_under(root):
        entry = read_ledger(layout.status_path(day), layout.journal_path(day)).entries.get(symbol)
        day_rows = _not_started_rows(layout, day)
        if entry is not None:
            day_rows += _attempt_rows(day, entry)
        rows += sorted(day_rows, key=lambda r: r.started_at)
    return rows


def _attempt_rows(day: str, entry: LedgerEntry) -> list[HistoryRow]:
    rows = []
    for a in entry.attempts:
        kept = entry.artifact_dir is not None and a.artifact_dir == entry.artifact_dir
        rows.append(
            HistoryRow(
                day=day,
                attempt=a.number,
                started_at=a.started_at,
                # Two stages: a prepare that succeeded built features, not a model.
                status="prepared"
                if a.prepare_only and a.state.value == "success"
                else a.state.value,
                minutes=None if a.seconds is None else round(a.seconds / 60.0, 3),
                reason=None if a.state.value == "success" else a.reason,
                metrics=key_metrics(entry.metrics) if kept else {},
            )
        )
    mark = bad_data_mark(entry)
    if mark is not None:  # its data file was bad: failed without an attempt
        rows.append(
            HistoryRow(day, 0, str(mark["at"]), ItemState.FAILED.value, None, mark["why"], {})
        )
    return rows


def _not_started_rows(layout: Layout, day: str) -> list[HistoryRow]:
    return [
        HistoryRow(
            day=day,
            attempt=0,
            started_at=str(r["started_at"]),
            status=NOT_STARTED,
            minutes=None,
            reason=f"exit {r.get('exit_code')} ({meaning(r.get('exit_code'))}): {r.get('reason')}",
            metrics={},
        )
        for r in read_invocations(layout, day)
        if r.get("started") is False
    ]


def key_metrics(metrics: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: metrics[k] for k in KEY_METRICS if metrics and k in metrics}


def print_history(symbol: str, rows: list[HistoryRow], as_json: bool, console: Console) -> None:
    if as_json:
        print(json.dumps({"symbol": symbol, "attempts": [asdict(r) for r in rows]}), flush=True)
        return
    if not rows:
        console.print(f"{symbol}: no attempts in any ledger")
        return
    attempts = sum(1 for r in rows if r.attempt)
    title = f"{symbol}: {attempts} attempts"
    if len(rows) > attempts:
        title += f", {len(rows) - attempts} night(s) that did not start"
    table = Table(title=title, title_justify="left")
    for name in ("day", "attempt", "started", "status", "minutes", *KEY_METRICS, "reason"):
        table.add_column(
            name, overflow="fold", justify="right" if name in ("minutes", *KEY_METRICS) else "left"
        )
    for r in rows:
        table.add_row(
            r.day,
            str(r.attempt) if r.attempt else "-",
            r.started_at[11:19],
            r.status,
            "" if r.minutes is None else f"{r.minutes:.2f}",
            *(_number(r.metrics.get(k)) for k in KEY_METRICS),
            r.reason or "",
        )
    console.print(table)


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else ""
