"""`retrainer models [SYMBOL]`: each symbol's champion, its challengers, and the rest.

Exit 0 when every champion shown verifies, 1 when one does not (or its CHAMPION cannot
be read): a script may use it as a check before it loads a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from retrainer.base.artifacts import Layout
from retrainer.base.exitcodes import ExitCode
from retrainer.registry.champion import symbols_with_models
from retrainer.registry.models import HEADLINE_METRICS, SymbolModels, list_models


def models_of(root: Path, symbol: str | None, now: datetime) -> list[SymbolModels]:
    """One symbol's models, or every symbol's that has a folder under models/."""
    layout = Layout(root)
    symbols = [symbol] if symbol is not None else symbols_with_models(layout)
    return [list_models(layout, s, now) for s in symbols]


def age_text(seconds: float | None) -> str:
    """An age in its two largest units: 3d 4h, 5h 12m, 7m, 40s."""
    if seconds is None:
        return "?"
    s = int(seconds)
    days, hours, minutes = s // 86400, s % 86400 // 3600, s % 3600 // 60
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m" if minutes else f"{s}s"


def print_models(models: Sequence[SymbolModels], as_json: bool, console: Console) -> ExitCode:
    code = ExitCode.OK if all(m.ok for m in models) else ExitCode.SOME_FAILED
    if as_json:
        print(json.dumps({"symbols": [m.to_dict() for m in models]}), flush=True)
        return code
    if not any(m.champion or m.challengers or m.older or m.pointer_error for m in models):
        console.print("no models" + (f" for {models[0].symbol}" if len(models) == 1 else ""))
        return code
    shown = _metric_columns(models)
    table = Table(title="Models: champions and challengers", title_justify="left")
    for name in ("symbol", "role", "folder", "made / promoted", "age", *shown):
        table.add_column(name, justify="right" if name in shown else "left")
    table.add_column("verifies / why", overflow="fold")
    for m in models:
        _add_rows(table, m, shown)
    console.print(table)
    for m in models:
        if m.older:
            console.print(
                f"{m.symbol}: {m.older} older or failed attempt folder(s), "
                f"{m.older_bytes / 1e6:.1f} MB (retrainer prune)"
            )
    return code


def _metric_columns(models: Sequence[SymbolModels]) -> list[str]:
    """The headline metrics any listed model has (a plug-in may report none of them)."""
    found = {
        k
        for m in models
        for metrics in (
            m.champion.metrics if m.champion else {},
            *(c.metrics for c in m.challengers),
        )
        for k in metrics
    }
    return [k for k in HEADLINE_METRICS if k in found]


def _add_rows(table: Table, m: SymbolModels, shown: list[str]) -> None:
    if m.pointer_error is not None:
        unreadable = f"[red]CHAMPION unreadable[/red]: {escape(m.pointer_error)}"
        table.add_row(m.symbol, "champion", "?", "", "", *_metrics({}, shown), unreadable)
    c = m.champion
    if c is not None:
        verdict = "yes" if c.verifies else f"[red]NO[/red]: {escape('; '.join(c.problems))}"
        table.add_row(
            m.symbol,
            "champion",
            escape(c.folder.rsplit("/", 1)[-1]),
            c.promoted_at,
            age_text(c.age_s),
            *_metrics(c.metrics, shown),
            f"{verdict} ({c.decision}: {escape(c.reason)})",
        )
    for challenger in m.challengers:
        table.add_row(
            m.symbol,
            "challenger",
            escape(challenger.name),
            challenger.made_at,
            age_text(challenger.age_s),
            *_metrics(challenger.metrics, shown),
            "",
        )


def _metrics(metrics: dict[str, Any], shown: list[str]) -> list[str]:
    return [_number(metrics.get(k)) for k in shown]


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else ""
