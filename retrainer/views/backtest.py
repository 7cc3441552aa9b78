"""A backtest on the console: its windows per symbol and the estimated time, live
progress, and the walk-forward result."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console

from retrainer.plan.forecast import forecast_line
from retrainer.plan.planner import Action, Plan, PlanItem
from retrainer.views.display import plain_table
from retrainer.views.night_console import NightConsole

Row = tuple[str, ...]


class BacktestConsole(NightConsole):
    """The NightReporter of `retrainer backtest`: the night's progress and result, and
    the plan as windows per symbol (retrainer.job.nightly)."""

    def __init__(self, console: Console, verbose: bool = False) -> None:
        super().__init__(console)
        self.verbose = verbose  # every window on its own line, not one line per symbol

    def plan(self, plan: Plan, dry_run: bool) -> None:
        print_backtest_plan(plan, self.console, dry_run, self.verbose)


def print_backtest_plan(plan: Plan, console: Console, dry_run: bool, verbose: bool) -> None:
    policy = plan.policy
    title = "Backtest plan (dry run: nothing is written)" if dry_run else "Backtest plan"
    console.print(
        f"{title}: {plan.layout.relative(plan.layout.run_dir(plan.day))}, trainer "
        f"{plan.trainer}; {policy.window} at a time, {policy.threads_per_item} thread(s) and "
        f"{policy.memory_cap_mb} MB per window",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    headers, rows = _window_rows(plan.items) if verbose else _symbol_rows(plan.items)
    right = [h in ("windows", "to run", "done", "train bars", "forecast bars") for h in headers]
    console.file.write(plain_table(headers, rows, right))
    counts = f"{len(plan.to_run)} windows to run, {_done(plan.items)} done (skipped)"
    skipped = [i for i in plan.items if i.window is None and i.action is not Action.RUN]
    if skipped:
        counts += f", {len(skipped)} symbol(s) without a window"
    console.print(counts, markup=False, highlight=False)
    if plan.forecast is not None and plan.forecast.items:
        line = forecast_line(plan.forecast, "windows")
        if _done(plan.items) == 0 and plan.forecast.known:
            line += "; before a window is done: each symbol's nightly time, scaled to its window"
        if plan.forecast.new:
            line += f" ({plan.forecast.new} windows without any measure: a typical item's time)"
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def _done(items: tuple[PlanItem, ...]) -> int:
    return sum(1 for i in items if i.window is not None and i.action is Action.SKIP)


def _symbol_rows(items: tuple[PlanItem, ...]) -> tuple[Row, list[Row]]:
    headers: Row = (
        "symbol",
        "windows",
        "to run",
        "done",
        "first forecast",
        "last forecast",
        "note",
    )
    by_symbol: dict[str, list[PlanItem]] = {}
    for item in items:
        by_symbol.setdefault(item.symbol, []).append(item)
    rows: list[Row] = []
    for symbol, mine in by_symbol.items():
        windows = [i for i in mine if i.window is not None]
        if not windows:
            rows.append((symbol, "0", "0", "0", "-", "-", mine[0].why))
            continue
        first, last = windows[0].window, windows[-1].window
        assert first is not None and last is not None
        to_run = sum(1 for i in windows if i.action is Action.RUN)
        rows.append(
            (
                symbol,
                str(len(windows)),
                str(to_run),
                str(len(windows) - to_run),
                first.forecast_first[:16],
                last.forecast_last[:16],
                f"train {first.train_bars} bars, forecast {first.forecast_bars} per window",
            )
        )
    return headers, rows


def _window_rows(items: tuple[PlanItem, ...]) -> tuple[Row, list[Row]]:
    headers: Row = ("item", "action", "train", "forecast", "train bars", "forecast bars", "why")
    rows: list[Row] = []
    for item in items:
        w = item.window
        if w is None:
            rows.append((item.symbol, item.action.value, "-", "-", "-", "-", item.why))
            continue
        rows.append(
            (
                item.item_id,
                item.action.value,
                f"{w.train_first[:16]} .. {w.train_last[:16]}",
                f"{w.forecast_first[:16]} .. {w.forecast_last[:16]}",
                str(w.train_bars),
                str(w.forecast_bars),
                item.why,
            )
        )
    return headers, rows


def print_backtest_result(summary: Mapping[str, Any], path: Path, console: Console) -> None:
    """Per symbol: windows done of total and the headline walk-forward figures."""
    headers = ("symbol", "windows", "complete", "headline (walk-forward, out of sample)")
    rows = []
    for symbol, record in summary.get("symbols", {}).items():
        metrics = record.get("metrics") or {}
        rows.append(
            (
                symbol,
                f"{record['windows_done']}/{record['windows_total']}",
                "yes" if record.get("complete") else "no",
                headline(metrics),
            )
        )
    console.file.write(plain_table(headers, rows, [False, True, False, False]))
    for symbol, why in summary.get("skipped", {}).items():
        console.print(f"{symbol}: skipped: {why}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"backtest summary: {path}", markup=False, highlight=False, soft_wrap=True)


def headline(metrics: Mapping[str, Any]) -> str:
    """The figures a quant reads first, with their standard errors where there are some."""
    parts = []
    if metrics.get("accuracy_edge") is not None:
        se = metrics.get("accuracy_edge_se")
        parts.append(
            f"accuracy {_f(metrics.get('test_accuracy'))} vs majority "
            f"{_f(metrics.get('majority_rate'))}: edge {_f(metrics['accuracy_edge'])}"
            + (f" ± {_f(se)}" if se is not None else "")
        )
    if "net_sharpe" in metrics:
        parts.append(
            f"net Sharpe {_f(metrics.get('net_sharpe'), 2)} ± {_f(metrics.get('net_sharpe_se'), 2)}"
        )
    if metrics.get("pinball_mean") is not None:
        naive, skill = metrics.get("baseline_pinball_mean"), metrics.get("pinball_skill")
        parts.append(
            f"pinball {_f(metrics['pinball_mean'], 5)} vs naive {_f(naive, 5)} (skill {_f(skill)})"
        )
    return "; ".join(parts) or "-"


def _f(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, int | float) else "n/a"
