"""The report's PNG charts, drawn with matplotlib's Agg canvas (no display, no pyplot
state, so it is safe in any process). matplotlib is the `report` extra."""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

from retrainer.base.errors import BadInputError
from retrainer.views.report.data import Bar

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# One colour per outcome, the same in every chart and in the page's table.
STATE_COLOURS = {
    "success": "#2e9b4f",
    "prepared": "#9fd8ae",  # two stages: a prepare that succeeded (features, no model)
    "failed": "#d1343b",
    "timeout": "#ef8a17",
    "interrupted": "#8c8c8c",
    "running": "#2f6fd0",
    "pending": "#c9c9c9",
    "skipped": "#c9c9c9",
}
MAX_LABELLED_BARS = 60  # beyond this, symbol names on the timeline would only be noise
MAX_SEAMED_BARS = 300
MAX_SHARPE_BARS = 60  # beyond this, the best and the worst half of it each
DPI = 100


def new_figure(width_in: float, height_in: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - the dev install has it
        raise BadInputError(
            "retrainer report needs matplotlib: pip install 'retrainer[report]'"
        ) from None
    return Figure(figsize=(width_in, height_in), dpi=DPI, layout="constrained")


def png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def gantt_png(bars: Sequence[Bar]) -> bytes:
    """Every attempt on its worker slot over wall-clock time, coloured by outcome."""
    from matplotlib.patches import Patch

    lanes = sorted({b.lane for b in bars}) or [0]
    origin = min((b.start for b in bars), default=None)
    span_s = max(((b.end - origin).total_seconds() for b in bars if origin), default=0.0)
    unit, unit_s = ("hours", 3600.0) if span_s > 3 * 3600 else ("minutes", 60.0)
    fig = new_figure(11.0, 1.6 + 0.45 * len(lanes))
    ax = fig.add_subplot()
    # One collection per slot and outcome: a night of 10,000 attempts draws quickly.
    spans: dict[tuple[int, str], list[tuple[float, float]]] = defaultdict(list)
    for bar in bars:
        assert origin is not None
        start = (bar.start - origin).total_seconds() / unit_s
        # A bar lasts at least a sliver, so a 40 ms attempt still shows.
        width = max((bar.end - bar.start).total_seconds() / unit_s, span_s / unit_s / 2000)
        spans[(bar.lane, bar.state)].append((start, width))
        if len(bars) <= MAX_LABELLED_BARS:
            ax.text(
                start + width / 2,
                bar.lane,
                bar.symbol,
                ha="center",
                va="center",
                fontsize=6,
                color="white",
                clip_on=True,
                zorder=3,
            )
    # White seams tell neighbouring bars apart; on thousands of thin bars they would
    # wash the colours out.
    seam = 0.5 if len(bars) <= MAX_SEAMED_BARS else 0.0
    for (lane, state), ranges in spans.items():
        ax.broken_barh(
            ranges,
            (lane - 0.4, 0.8),
            facecolors=STATE_COLOURS.get(state, "#555555"),
            edgecolors="white",
            linewidth=seam,
        )
    ax.set_yticks(lanes, [f"slot {n}" for n in lanes])
    ax.invert_yaxis()
    since = f" since {origin:%H:%M:%S} UTC" if origin else ""
    ax.set_xlabel(f"{unit}{since}")
    ax.set_title("Attempts per worker slot")
    seen = [s for s in STATE_COLOURS if any(b.state == s for b in bars)]
    ax.legend(
        handles=[Patch(color=STATE_COLOURS[s], label=s) for s in seen],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
    )
    ax.grid(axis="x", alpha=0.3)
    if not bars:
        ax.text(0.5, 0.5, "no attempts recorded", transform=ax.transAxes, ha="center")
    return png_bytes(fig)


def minutes_png(minutes: Sequence[tuple[float, str]]) -> bytes:
    """How long attempts took, stacked by how they ended."""
    fig = new_figure(5.6, 3.6)
    ax = fig.add_subplot()
    states = [s for s in STATE_COLOURS if any(state == s for _, state in minutes)]
    if minutes:
        ax.hist(
            [[m for m, state in minutes if state == s] for s in states],
            bins=min(30, max(5, len(minutes) // 2)),
            stacked=True,
            color=[STATE_COLOURS[s] for s in states],
            label=states,
        )
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no finished attempts", transform=ax.transAxes, ha="center")
    ax.set_xlabel("minutes per attempt")
    ax.set_ylabel("attempts")
    ax.set_title("Training minutes")
    return png_bytes(fig)


def sharpe_png(sharpes: Sequence[tuple[str, float]]) -> bytes:
    """Net-of-cost Sharpe per symbol on its test span, best first."""
    ranked = sorted(sharpes, key=lambda s: -s[1])
    title = "Net-of-cost Sharpe per symbol (test span)"
    if len(ranked) > MAX_SHARPE_BARS:
        half = MAX_SHARPE_BARS // 2
        title += f": best and worst {half} of {len(ranked)}"
        ranked = ranked[:half] + ranked[-half:]
    fig = new_figure(5.6, max(3.6, 0.9 + 0.2 * len(ranked)))
    ax = fig.add_subplot()
    if ranked:
        names = [s for s, _ in ranked]
        values = [v for _, v in ranked]
        ax.barh(names, values, color=["#2e9b4f" if v >= 0 else "#d1343b" for v in values])
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=7)
    else:
        ax.text(0.5, 0.5, "no net Sharpe recorded", transform=ax.transAxes, ha="center")
    ax.set_xlabel("net Sharpe (annualised)")
    ax.set_title(title, fontsize=10)
    return png_bytes(fig)
