"""A backtest's page: <root>/backtests/<name>/report.html, self-contained.

Per symbol the walk-forward figures over all its windows (out of sample), its equity
curve net of costs (direction models: the positions each window took), a figure per
window, and what is missing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import pandas as pd

from retrainer.base.artifacts import BacktestLayout, atomic_write_text, read_json_object
from retrainer.base.costs import SymbolCosts
from retrainer.base.errors import BadInputError
from retrainer.training.walkforward import equity_curve
from retrainer.views.backtest import headline
from retrainer.views.report.charts import new_figure, png_bytes
from retrainer.views.report.page import CSS, html_table, img_tag

MAX_CURVES = 20  # more lines than this on one chart is noise; the table has them all
# The per-window figure drawn: the first of these the windows report.
WINDOW_FIGURE_ORDER = ("accuracy_edge", "pinball_skill", "net_sharpe", "pinball_mean")


def write_backtest_report(layout: BacktestLayout) -> Path:
    summary = read_json_object(layout.backtest_summary_path())
    if summary is None:
        raise BadInputError(f"no backtest summary at {layout.backtest_summary_path()}")
    curves = _equity_curves(layout, summary)
    figure, per_window = _per_window(summary)
    charts = {"equity": _equity_png(curves), "windows": _windows_png(figure, per_window)}
    page = render_backtest_page(summary, charts, figure)
    atomic_write_text(layout.report_path(), page)
    return layout.report_path()


def render_backtest_page(
    summary: Mapping[str, Any], charts: Mapping[str, bytes], figure: str
) -> str:
    name = escape(str(summary.get("name", "")))
    symbols: dict[str, Any] = summary.get("symbols", {})
    rows = [
        (
            escape(symbol),
            f"{record['windows_done']}/{record['windows_total']}",
            "yes" if record.get("complete") else "no",
            escape(headline(record.get("metrics") or {})),
        )
        for symbol, record in symbols.items()
    ]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>retrainer backtest {name}</title><style>{CSS}</style></head><body>",
        f"<h1>retrainer backtest: {name}</h1>",
        f'<p class="muted">trainer {escape(str(summary.get("trainer")))}; updated '
        f"{escape(str(summary.get('updated_at')))}; {summary.get('windows_done')} of "
        f"{summary.get('windows_total')} windows done"
        + ("" if summary.get("complete") else " (incomplete: see Missing)")
        + "</p>",
        "<h2>Walk-forward, out of sample</h2>",
        html_table(("symbol", "windows", "complete", "headline"), rows, {"windows"}),
        "<h2>Equity curve, net of costs</h2>",
        img_tag(charts["equity"], "cumulative net log return per symbol", "equity"),
        f"<h2>{escape(figure or 'figure')} per window</h2>",
        img_tag(charts["windows"], f"{figure} of each window", "windows"),
    ]
    missing = [m for record in symbols.values() for m in record.get("missing", [])]
    skipped = summary.get("skipped", {})
    if missing or skipped:
        parts += ["<h2>Missing</h2>", "<ul>"]
        parts += [f"<li>{escape(m)}</li>" for m in missing]
        parts += [f"<li><b>{escape(s)}</b>: {escape(w)}</li>" for s, w in skipped.items()]
        parts.append("</ul>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _equity_curves(layout: BacktestLayout, summary: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    curves = {}
    for symbol, record in list(summary.get("symbols", {}).items())[:MAX_CURVES]:
        path, costs = record.get("forecasts"), record.get("costs")
        if not path or not costs:
            continue
        frame = pd.read_parquet(layout.root / path)
        if "position" not in frame.columns:  # not a direction model: no positions to hold
            continue
        costs = SymbolCosts.from_dict(costs)
        curves[symbol] = equity_curve(frame, costs)
    return curves


def _per_window(summary: Mapping[str, Any]) -> tuple[str, dict[str, list[float]]]:
    symbols: dict[str, Any] = summary.get("symbols", {})
    reported = {
        key
        for record in symbols.values()
        for window in record.get("windows", [])
        for key in (window.get("metrics") or {})
    }
    figure = next((k for k in WINDOW_FIGURE_ORDER if k in reported), "")
    values = {
        symbol: [
            float(w["metrics"][figure])
            for w in record.get("windows", [])
            if isinstance((w.get("metrics") or {}).get(figure), int | float)
        ]
        for symbol, record in list(symbols.items())[:MAX_CURVES]
    }
    return figure, values


def _equity_png(curves: Mapping[str, pd.DataFrame]) -> bytes:
    fig = new_figure(7.5, 3.6)
    ax = fig.add_subplot()
    for symbol, curve in curves.items():
        ax.plot(curve["time"], curve["equity"], linewidth=0.9, label=symbol)
    if curves:
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.legend(fontsize=6, ncol=4)
    else:
        ax.text(
            0.5, 0.5, "no positions (not a direction model)", transform=ax.transAxes, ha="center"
        )
    ax.set_ylabel("cumulative net log return")
    return png_bytes(fig)


def _windows_png(figure: str, values: Mapping[str, Sequence[float]]) -> bytes:
    fig = new_figure(7.5, 3.2)
    ax = fig.add_subplot()
    for symbol, series in values.items():
        ax.plot(range(len(series)), series, marker=".", linewidth=0.8, label=symbol)
    if any(values.values()):
        ax.axhline(0.0, color="black", linewidth=0.6)
        ax.legend(fontsize=6, ncol=4)
    ax.set_xlabel("window")
    ax.set_ylabel(figure or "-")
    return png_bytes(fig)
