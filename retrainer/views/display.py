"""What the terminal shows: the plan table (dry run) and the closing lines of a run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from retrainer.base.costs import SymbolCosts
from retrainer.notify.messages import model_lines
from retrainer.plan.forecast import duration_text, forecast_line
from retrainer.plan.planner import Plan, PlanItem


def make_console(stderr: bool = False) -> Console:
    # Off a terminal (cron, systemd, a pipe) rich writes no control characters; give it a
    # wide line so reasons are not cut.
    probe = Console(stderr=stderr)
    return Console(stderr=stderr, width=None if probe.is_terminal else 200)


def _print_nodes(nodes: tuple[dict[str, Any], ...], slots: int, console: Console) -> None:
    """A remote driver's cluster: each node, what it offers, how many items fit at once."""
    console.print(f"cluster: {len(nodes)} node(s), {slots} item(s) at once")
    rows = [
        (
            str(n["name"]),
            f"{n['cpus']:g}",
            f"{n['gpus']:g}",
            str(n["memory_mb"]),
            ", ".join(f"{k} {v:g}" for k, v in sorted(n.get("resources", {}).items())),
        )
        for n in nodes
    ]
    headers = ("node", "CPUs", "GPUs", "memory MB", "resources")
    console.file.write(plain_table(headers, rows, [False, True, True, True, False]))


def print_plan(plan: Plan, console: Console, dry_run: bool) -> None:
    res, policy = plan.resources, plan.policy
    device = f"{res.gpu_count} GPU(s)" if res.has_gpu else "CPU only"
    title = "Plan (dry run: nothing is written)" if dry_run else "Plan"
    console.print(
        f"{title} for {plan.day}: mode {policy.mode.value}, {policy.window} at a time "
        f"(max_concurrent {policy.max_concurrent}), {policy.threads_per_item} thread(s) and "
        f"{policy.memory_cap_mb} MB per item, "
        f"{res.cpu_count} cores, {device}; root {plan.layout.root}"
    )
    if policy.concurrency_why:
        budget = policy.memory_budget_mb
        console.print(
            f"concurrency: {policy.concurrency_why}"
            + (f" (memory budget {budget:,} MB)" if budget is not None else ""),
            markup=False,
            highlight=False,
        )
    if res.nodes:
        _print_nodes(res.nodes, res.machine_slots, console)
    headers = (
        "symbol",
        "action",
        "why",
        "taker bps",
        "maker bps",
        "half-spread bps",
        "cost/turnover bps",
        "champion",
        "last bar",
        "start",
        "expected",
    )
    starts = {item.item_id: n for n, item in enumerate(plan.to_run, 1)}
    rows = [
        (
            item.symbol,
            item.action.value,
            item.why,
            *(
                (
                    f"{item.costs.taker_fee_bps:.2f}",
                    f"{item.costs.maker_fee_bps:.2f}",
                    _half_spread_cell(item.costs),
                    f"{item.costs.cost_per_turnover_bps:.2f}",
                )
                if item.costs is not None
                else ("-",) * 4  # its data could not be read
            ),
            _champion_cell(item),
            (item.last_bar or "-")[:16] + (" STALE" if item.stale else ""),
            *_queue_cells(item, starts.get(item.item_id)),
        )
        for item in plan.items
    ]
    right = [("bps" in name or name in ("start", "expected")) for name in headers]
    for note in plan.notes:  # how the folder's symbols were chosen; files left unranked
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    if console.is_terminal:
        table = Table(show_lines=False)
        for name, align_right in zip(headers, right, strict=True):
            table.add_column(name, justify="right" if align_right else "left")
        for row in rows:
            table.add_row(*(escape(cell) for cell in row))
        console.print(table)
    else:  # a log file: plain aligned columns, far cheaper than rich's layout for many rows
        console.file.write(plain_table(headers, rows, right))
    counts = f"{len(plan.to_run)} to run, {len(plan.to_skip)} to skip"
    if plan.to_fail:
        counts += f", {len(plan.to_fail)} to fail on bad data (never started)"
    if plan.fresh:
        counts += f" ({len(plan.fresh)} fresh: unchanged since their champion)"
    if plan.stale:
        counts += f"; {len(plan.stale)} with stale data (last bar too old)"
    console.print(counts)
    _print_forecast(plan, console)
    if plan.quarantined:  # skipped: failed too many nights in a row
        names = ", ".join(item.symbol for item in plan.quarantined)
        console.print(
            f"quarantined ({len(plan.quarantined)}): {names} (`retrainer unquarantine SYMBOL` "
            "releases one; --force trains them all)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def _queue_cells(item: PlanItem, start: int | None) -> tuple[str, str]:
    """Its place in the start order and its expected duration (`new`: no history)."""
    if start is None:
        return "-", "-"
    expected = "new" if item.expected_s is None else duration_text(item.expected_s)
    return str(start), expected


def _print_forecast(plan: Plan, console: Console) -> None:
    """When the queue should finish (the same rule as the engine, the history's
    durations), the deadline, and a warning when the forecast misses it."""
    if plan.forecast is None or not plan.forecast.items:
        return
    order = "longest first" if plan.policy.order == "longest_first" else "plan order"
    line = f"{forecast_line(plan.forecast)}; {order}"
    if plan.policy.deadline is not None:
        line += f"; deadline {plan.policy.deadline} local"
    console.print(line, markup=False, highlight=False, soft_wrap=True)
    warning = plan.deadline_warning
    if warning is not None:
        console.print(warning, style="bold red", markup=False, highlight=False, soft_wrap=True)


def _half_spread_cell(costs: SymbolCosts) -> str:
    """The estimate, or where the figure came from when it is not one."""
    source = str(costs.half_spread_source)
    shown = f"{costs.half_spread_bps:.2f}"
    if source != "corwin_schultz":
        shown += f" ({source})"
    return shown if costs.tradable else shown + " not tradable"


def _champion_cell(item: PlanItem) -> str:
    if item.champion_problem:
        return "unreadable pointer"
    return item.champion.artifact_dir.rsplit("/", 1)[-1] if item.champion else "-"


def plain_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]
) -> str:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            cell.rjust(width) if align else cell.ljust(width)
            for cell, width, align in zip(cells, widths, right, strict=True)
        )

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)]) + "\n"


def print_result(summary: dict[str, Any], summary_path: Path, console: Console) -> None:
    # Symbols it never started (stopped first) are named apart: an earlier run's models of
    # the day stay, and the ledger keeps their time.
    not_started = summary.get("not_started", 0)
    items = "windows" if summary.get("kind") == "backtest" else "symbols"
    console.print(
        f"retrainer {summary['day']}: {summary['total_symbols']} {items}: "
        f"{summary['succeeded']} succeeded, {summary['failed']} failed, "
        f"{summary['skipped']} skipped, {summary['interrupted']} interrupted"
        f"{f', {not_started} not started' if not_started else ''} "
        f"in {summary['total_wall_minutes']:.2f} min (exit {summary['exit_code']})"
    )
    for symbol, reason in summary["failures"].items():  # a reason may hold "[data]"
        console.print(f"  {symbol}: {reason}", markup=False, highlight=False)
    for line in model_lines(summary):  # promoted, kept champions and why, fresh, stale
        console.print(line, markup=False, highlight=False)
    console.print(f"summary: {summary_path}")
