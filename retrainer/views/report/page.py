"""The report page: one self-contained HTML file (inline CSS, charts as data: URIs), so it
can be mailed, copied or opened from a file share without anything else."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from html import escape
from typing import Any

from retrainer.views.progress import counts_text
from retrainer.views.report.charts import STATE_COLOURS
from retrainer.views.report.data import ReportData, SymbolRow
from retrainer.views.runview import hms

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1160px;
       color: #1d1d1f; padding: 0 16px; }
h1 { font-size: 22px; margin-bottom: 4px; } h2 { font-size: 17px; margin-top: 28px; }
.muted { color: #666; } .stale { color: #b45309; } .headline { font-size: 15px; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { padding: 4px 8px; border-bottom: 1px solid #e3e3e3; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.state { display: inline-block; padding: 0 7px; border-radius: 9px; color: white; }
.charts { display: flex; gap: 16px; flex-wrap: wrap; }
img { max-width: 100%; border: 1px solid #eee; }
#image-warning { color: #d1343b; font-weight: bold; }
"""

# If a chart cannot be decoded, say so on the page rather than show a broken icon; the
# count also lets a headless browser check that every chart rendered.
SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.querySelectorAll("img.chart"));
  var ok = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-charts-decoded", ok.length + "/" + images.length);
  if (ok.length < images.length) {
    document.getElementById("image-warning").textContent =
      (images.length - ok.length) + " chart(s) could not be shown";
  }
});
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_page(data: ReportData, charts: Mapping[str, bytes]) -> str:
    view = data.latest
    failures = [r for r in data.rows if r.status in ("failed", "timeout", "interrupted")]
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>retrainer report {escape(data.day)}</title>",
        f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>",
        f"<h1>retrainer report: {escape(data.day)}</h1>",
        f'<p class="muted">root {escape(str(data.root))}; generated '
        f"{data.generated_at:%Y-%m-%d %H:%M:%S} UTC</p>",
        '<p id="image-warning"></p>',
        f'<p class="headline">Latest run {escape(view.run_id)}: {escape(view.phase.value)}; '
        f"{escape(counts_text(view))}; wall {hms(view.elapsed_s)}.</p>",
        "<h2>Runs</h2>",
        _runs_table(data.runs),
        "<h2>Timeline</h2>",
        img_tag(charts["gantt"], "timeline of attempts per worker slot", "gantt"),
        '<div class="charts"><div><h2>Training minutes</h2>',
        img_tag(charts["minutes"], "histogram of minutes per attempt", "minutes"),
        "</div><div><h2>Net-of-cost Sharpe</h2>",
        img_tag(charts["sharpe"], "net Sharpe per symbol", "sharpe"),
        "</div></div>",
    ]
    if failures:
        parts += ["<h2>Failures</h2>", "<ul>"]
        parts += [
            f"<li><b>{escape(r.symbol)}</b> {_state(r.status)} after {r.attempts} "
            f"attempt(s): {escape(r.reason)}</li>"
            for r in failures
        ]
        parts.append("</ul>")
    parts += ["<h2>Symbols</h2>", _symbols_table(data.rows), "</body></html>"]
    return "\n".join(parts) + "\n"


def img_tag(png: bytes, alt: str, name: str) -> str:
    return f'<img class="chart" id="chart-{name}" alt="{escape(alt)}" src="{data_uri(png)}">'


def _state(state: str) -> str:
    colour = STATE_COLOURS.get(state, "#555555")
    return f'<span class="state" style="background:{colour}">{escape(state)}</span>'


def html_table(headers: Iterable[str], rows: Iterable[Iterable[str]], numeric: set[str]) -> str:
    headers = list(headers)

    def cell(tag: str, header: str, content: str) -> str:
        align = ' class="num"' if header in numeric else ""
        return f"<{tag}{align}>{content}</{tag}>"

    head = "".join(cell("th", h, escape(h)) for h in headers)
    body = "".join(
        "<tr>" + "".join(cell("td", h, c) for h, c in zip(headers, row, strict=True)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _runs_table(runs: list[dict[str, Any]]) -> str:
    rows = [
        [
            escape(str(r.get("run_id", ""))),
            escape(str(r.get("mode", ""))),
            escape(str(r.get("window", ""))),
            escape(str(r.get("started_at", ""))),
            escape(str(r.get("finished_at") or "not recorded")),
            escape(str(r.get("to_run", ""))),
            escape(str(r.get("to_skip", ""))),
            escape(str(r.get("exit_code", ""))),
        ]
        for r in runs
    ]
    return html_table(
        ["run", "mode", "at a time", "started", "finished", "to run", "skipped", "exit"],
        rows,
        {"at a time", "to run", "skipped", "exit"},
    )


def _number(value: float | None, digits: int) -> str:
    return "" if value is None else f"{value:.{digits}f}"


# The per-symbol table's columns, and whether each holds a number (right-aligned).
SYMBOL_COLUMNS = (
    ("symbol", False),
    ("status", False),
    ("attempts", True),
    ("minutes", True),
    ("net Sharpe ± SE", True),
    ("gross Sharpe", True),
    ("accuracy", True),
    ("edge over majority ± SE", True),
    ("trades", True),
    ("test days", True),
    ("model", False),
    ("data", False),
    ("reason", False),
)


def _symbols_table(rows: list[SymbolRow]) -> str:
    cells = [
        [
            escape(r.symbol),
            _state(r.status),
            str(r.attempts),
            _number(r.minutes, 2),
            _plus_minus(r.net_sharpe, r.net_sharpe_se, 2),
            _number(r.gross_sharpe, 2),
            _number(r.accuracy, 3),
            _plus_minus(r.accuracy_edge, r.accuracy_edge_se, 3),
            "" if r.trades is None else str(r.trades),
            _number(r.test_days, 0),
            escape(r.model),
            '<span class="stale">stale</span>' if r.stale else "",
            escape(r.reason),
        ]
        for r in rows
    ]
    return html_table(
        [name for name, _ in SYMBOL_COLUMNS],
        cells,
        {name for name, numeric in SYMBOL_COLUMNS if numeric},
    )


def _plus_minus(value: float | None, se: float | None, digits: int) -> str:
    """A figure with its standard error, so a reader sees whether it is within noise."""
    if value is None:
        return ""
    return f"{value:.{digits}f}" + ("" if se is None else f" ± {se:.{digits}f}")
