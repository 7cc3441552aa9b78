"""The plan of a walk-forward backtest: each (symbol, window) an item of its own.

A symbol's windows are cut from its bars ([backtest]): forecast origins every `step_bars`
bars from the first bar a whole window fits before (or `start`) to the last bar (or `end`);
each fit forecasts `refit_every` x `step_bars` bars, after `embargo_bars` bars left out
after its training span (rolling: the last `window_bars` bars; expanding: every bar since
the first window's start). The backtest has its own folder and ledger
(base.artifacts.BacktestLayout): a window done and verified is skipped by a rerun, so a
killed backtest resumes where it stopped; --force redoes it all.

The backtest's settings (trainer, params, [backtest]) are kept in its folder: a rerun with
other settings must say --force or take another name. Each window's folder keeps the
window it ran (window.json: its bounds and the symbol's data by value): a window whose
bars changed since is run again.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from retrainer.base.artifacts import BacktestLayout, Layout, read_json_object
from retrainer.base.clock import iso, run_day
from retrainer.base.config import BacktestSettings, Settings
from retrainer.base.errors import BadInputError
from retrainer.base.resources import Resources
from retrainer.base.symbols import select_symbols
from retrainer.ledger.entries import ItemState, LedgerEntry
from retrainer.ledger.journal import read_ledger
from retrainer.plan.forecast import make_forecast
from retrainer.plan.history import History, read_history
from retrainer.plan.planner import (
    Action,
    DataCheck,
    Plan,
    PlanItem,
    check_data,
    data_format_of,
    decide,
    memory_needs,
    settled_entry,
    symbol_seed,
)
from retrainer.plan.policy import resolve_policy
from retrainer.training.contract import Trainer, validate_trainer_params
from retrainer.training.forecasts import WINDOW_FILE, ForecastWindow

FINGERPRINT_FILE = "backtest.json"


class NoWindow(ValueError):
    """Too little data (within start..end) for even one window."""


def backtest_layout(settings: Settings) -> BacktestLayout:
    return BacktestLayout(settings.run.root.resolve(), settings.backtest.name)


def cut_windows(
    timestamps_ns: np.ndarray, config: BacktestSettings, data_sha256: str = ""
) -> list[ForecastWindow]:
    """The symbol's windows in time order, or NoWindow saying why there is none."""
    n = len(timestamps_ns)
    need = config.window_bars + config.embargo_bars
    first = need
    if config.start is not None:
        first = max(first, int(np.searchsorted(timestamps_ns, _ns(config.start), side="left")))
    last = n - 1
    if config.end is not None:
        last = int(np.searchsorted(timestamps_ns, _ns(config.end), side="right")) - 1
    if first > last:
        raise NoWindow(
            f"too little data for one window: {n} bars, and a window needs "
            f"{config.window_bars} training bars + {config.embargo_bars} embargo before its "
            "first forecast"
            + (" inside [backtest] start .. end" if config.start or config.end else "")
        )
    span = config.step_bars * config.refit_every
    windows = []
    for index, origin in enumerate(range(first, last + 1, span)):
        stop = min(origin + span - 1, last)
        train_last = origin - config.embargo_bars - 1
        train_first = (
            train_last - config.window_bars + 1
            if config.mode == "rolling"
            else first - config.embargo_bars - config.window_bars
        )
        windows.append(
            ForecastWindow(
                index=index,
                train_first=_iso(timestamps_ns[train_first]),
                train_last=_iso(timestamps_ns[train_last]),
                forecast_first=_iso(timestamps_ns[origin]),
                forecast_last=_iso(timestamps_ns[stop]),
                embargo_bars=config.embargo_bars,
                train_bars=train_last - train_first + 1,
                forecast_bars=stop - origin + 1,
                data_sha256=data_sha256,
            )
        )
    return windows


@dataclass(frozen=True)
class Fingerprint:
    """What a backtest's windows were computed from."""

    trainer: str
    params: dict[str, Any]
    backtest: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def read_fingerprint(layout: BacktestLayout) -> Fingerprint | None:
    try:
        raw = json.loads((layout.home / FINGERPRINT_FILE).read_text("utf-8"))
        return Fingerprint(**raw)
    except (OSError, ValueError, TypeError):
        return None


def build_backtest_plan(
    settings: Settings, trainer: Trainer, resources: Resources, now: datetime, force: bool
) -> Plan:
    """Every symbol's windows: run, or skip (done and verified), or the symbol skipped with
    its reason (too little data); bad input (exit 2) before anything starts."""
    if not callable(getattr(trainer, "score_forecasts", None)):
        raise BadInputError(
            f"trainer.plugin {settings.trainer.plugin!r} cannot backtest: it has no "
            "score_forecasts hook (docs/backtests.md says what a backtest needs of a trainer)"
        )
    layout = backtest_layout(settings)
    params = validate_trainer_params(trainer, settings.trainer.params)
    data_format = data_format_of(settings)
    selection = select_symbols(
        settings.run.symbols,
        settings.data.path.resolve(),
        settings.data.topn_window_days,
        data_format,
        skip_unreadable=settings.data.on_bad == "skip",
    )
    checked = check_data(selection.symbols, settings, data_format, now)
    problems = [c.problem for c in checked.values() if c.problem]
    if problems and settings.data.on_bad != "skip":
        raise BadInputError(
            'bad data, nothing was started ([data] on_bad = "fail"):\n  ' + "\n  ".join(problems)
        )
    fingerprint = fingerprint_of(settings.trainer.plugin, params, settings)
    earlier = read_fingerprint(layout)
    if earlier is not None and not force and earlier != fingerprint:
        raise BadInputError(
            f"backtest {settings.backtest.name!r} ({layout.home}) was begun with other "
            "[backtest], trainer or params settings: rerun with --force to redo it, or give "
            "this one another [backtest] name"
        )
    ledger = read_ledger(layout.status_path(""), layout.journal_path(""))
    items: list[PlanItem] = []
    windows_of: dict[str, list[ForecastWindow]] = {}
    for symbol in selection.symbols:
        check = checked[symbol]
        if check.problem is not None or check.timestamps is None:
            items.append(_symbol_item(symbol, check, Action.FAIL, f"bad data: {check.problem}"))
            continue
        try:
            windows_of[symbol] = cut_windows(
                check.timestamps, settings.backtest, check.data_sha256 or ""
            )
        except NoWindow as exc:
            items.append(_symbol_item(symbol, check, Action.SKIP, str(exc)))
            continue
        for window in windows_of[symbol]:
            items.append(
                _window_item(symbol, window, check, ledger.entries, layout, force, settings)
            )
    if not windows_of:
        reasons = "\n  ".join(f"{i.symbol}: {i.why}" for i in items)
        raise BadInputError(
            "backtest.window_bars: no symbol has data for even one window "
            f"(window_bars = {settings.backtest.window_bars}, embargo_bars = "
            f"{settings.backtest.embargo_bars}, step_bars = {settings.backtest.step_bars}):\n  "
            + reasons
        )
    nights = read_history(Layout(settings.run.root.resolve()), run_day(now))
    rows = {s: len(c.timestamps) for s, c in checked.items() if c.timestamps is not None}
    items = _expected(items, ledger.entries, nights, rows)
    runnable = sum(1 for i in items if i.action is Action.RUN)
    # Two stages are a night's: a window's prepare would cut the nightly split.
    policy = resolve_policy(settings, resources, runnable, memory_needs(items), False)
    plan = Plan(
        run_day(now),
        layout,
        tuple(items),
        policy,
        resources,
        settings.trainer.plugin,
        params,
        settings.data.min_rows,
        data_format,
        tuple([selection.note] if selection.note else []),
        dict(selection.unranked),
        kind="backtest",
    )
    expected = {i.item_id: i.expected_s for i in plan.to_run}
    order = tuple(expected)  # in time order per symbol: the report fills as it goes
    forecast = make_forecast(order, expected, policy.window, now)
    return replace(plan, order=order, history=History(), forecast=forecast)


def fingerprint_of(trainer: str, params: Mapping[str, Any], settings: Settings) -> Fingerprint:
    """What a backtest's windows are computed from, as kept beside its ledger."""
    backtest = json.loads(settings.backtest.model_dump_json())
    return Fingerprint(trainer, dict(params), backtest)


def _window_item(
    symbol: str,
    window: ForecastWindow,
    check: DataCheck,
    entries: dict[str, LedgerEntry],
    layout: BacktestLayout,
    force: bool,
    settings: Settings,
) -> PlanItem:
    item_id = f"{symbol}/{window.name}"
    previous, settled = settled_entry(entries, item_id, layout)
    action, why = decide(previous, layout, force)
    if action is Action.SKIP and not _ran(window, layout, previous):
        action, why = Action.RUN, "its bounds or its symbol's data changed since it was done"
    elif why.startswith("succeeded today"):
        why = f"done at {previous.updated_at if previous else '?'}; artifacts verify"
    elif previous is None and not force:
        why = "not done yet"
    return PlanItem(
        symbol,
        action,
        why,
        check.path,
        check.costs,
        symbol_seed(settings.run.seed, item_id),
        previous,
        settled,
        inputs_key=check.data_sha256,
        last_bar=check.last_bar,
        window=window,
    )


def _ran(window: ForecastWindow, layout: BacktestLayout, entry: LedgerEntry | None) -> bool:
    """Whether the entry's verified folder was made for exactly this window."""
    if entry is None or entry.artifact_dir is None:
        return False
    ran = read_json_object(layout.root / entry.artifact_dir / WINDOW_FILE)
    return ran == window.to_dict()


def _symbol_item(symbol: str, check: DataCheck, action: Action, why: str) -> PlanItem:
    return PlanItem(symbol, action, why, check.path, check.costs, 0, None)


def _expected(
    items: list[PlanItem],
    entries: dict[str, LedgerEntry],
    nights: History,
    rows: dict[str, int],
) -> list[PlanItem]:
    """Each window's expected seconds: the median of the symbol's windows done so far (a
    resumed backtest's), else of all symbols' windows; before any is done, the symbol's
    nightly duration (past ledgers) scaled by the window's share of its bars; else None."""
    done: dict[str, list[float]] = {}
    for item_id, entry in entries.items():
        last = entry.last_attempt
        if entry.state is ItemState.SUCCESS and last is not None and last.seconds:
            done.setdefault(item_id.partition("/")[0], []).append(last.seconds)
    every = [s for values in done.values() for s in values]
    overall = statistics.median(every) if every else None
    out = []
    for item in items:
        if item.window is None:
            out.append(item)
            continue
        values = done.get(item.symbol)
        expected = statistics.median(values) if values else overall
        nightly = nights.of(item.symbol).seconds
        if expected is None and nightly is not None and rows.get(item.symbol):
            expected = nightly * item.window.train_bars / rows[item.symbol]
        out.append(replace(item, expected_s=expected))
    return out


def _ns(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1e9)


def _iso(ns: Any) -> str:
    return iso(datetime.fromtimestamp(int(ns) / 1e9, tz=UTC))
