"""`retrainer report`: a run's self-contained HTML page and its PNG charts.

<root>/reports/<day>/report.html   timeline, minutes, net Sharpe, a row per symbol
<root>/reports/<day>/{gantt,minutes,sharpe}.png
"""

from __future__ import annotations

from pathlib import Path

from retrainer.base.artifacts import atomic_write_bytes, atomic_write_text
from retrainer.views.report.charts import gantt_png, minutes_png, sharpe_png
from retrainer.views.report.data import ReportData, gather
from retrainer.views.report.page import render_page

__all__ = ["ReportData", "gather", "write_report"]


def write_report(root: Path, day: str | None, out: Path | None = None) -> Path:
    """Write the report of a day (the latest one by default); return the page's path."""
    data = gather(root, day)
    folder = out or root / "reports" / data.day
    charts = {
        "gantt": gantt_png(data.bars),
        "minutes": minutes_png(data.minutes),
        "sharpe": sharpe_png(data.sharpes),
    }
    for name, png in charts.items():
        atomic_write_bytes(folder / f"{name}.png", png)
    page = folder / "report.html"
    atomic_write_text(page, render_page(data, charts))
    return page
