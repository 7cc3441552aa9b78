"""The Plan: which items run or skip today, and why; their costs; the run's policy.

Building a plan reads the data, the ledger and the machine but writes nothing, so a dry
run is exactly this module plus printing.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from retrainer.base.artifacts import Layout, verify_manifest
from retrainer.base.clock import iso, run_day
from retrainer.base.config import RunSettings, Settings
from retrainer.base.costs import SymbolCosts, resolve_costs_from_arrays
from retrainer.base.data import PLAIN, DataFormat, data_values_sha256, find_data_file, read_ohlcv
from retrainer.base.errors import BadInputError, DataError
from retrainer.base.resources import Resources
from retrainer.base.symbols import select_symbols
from retrainer.ledger.entries import ItemState, LedgerEntry
from retrainer.ledger.journal import read_ledger
from retrainer.ledger.recovery import needs_settling, settle
from retrainer.plan.forecast import (
    Forecast,
    deadline_warning,
    longest_first,
    make_forecast,
    next_local_time,
)
from retrainer.plan.history import History, SymbolHistory, read_history
from retrainer.plan.memory import MemoryNeeds, expected_mb
from retrainer.plan.policy import RunPolicy, resolve_policy
from retrainer.plan.quarantine import (
    Quarantine,
    Release,
    history_days,
    quarantined_symbols,
    read_releases,
    release_note,
)
from retrainer.plan.search import Candidate, candidate_params, candidates, check_space
from retrainer.registry.champion import Champion, ChampionError, champion_problems, read_champion
from retrainer.registry.freshness import inputs_key
from retrainer.training.contract import Trainer, has_prepare, validate_trainer_params
from retrainer.training.forecasts import ForecastWindow


class Action(StrEnum):
    RUN = "run"
    SKIP = "skip"
    # Its data file is bad and [data] on_bad = "skip": recorded failed, never started.
    FAIL = "fail"


@dataclass(frozen=True)
class PlanItem:
    symbol: str
    action: Action
    why: str
    data_path: Path
    costs: SymbolCosts | None  # None: its data could not be read (action FAIL, or SKIP)
    seed: int
    previous: LedgerEntry | None = None
    settled: bool = False  # previous was left running by a scheduler that died: record it
    champion: Champion | None = None  # the model in production for the symbol, if any
    champion_problem: str | None = None  # its pointer could not be read
    inputs_key: str | None = None  # freshness.inputs_key of what this run would train on
    fresh: bool = False  # skipped: unchanged since its champion was trained
    last_bar: str | None = None  # the data's last bar (ISO, UTC)
    stale: bool = False  # that bar is older than [data] stale_after_hours
    # skipped: it failed too many nights in a row (until --force or `retrainer unquarantine`)
    quarantine: Quarantine | None = None
    # Its expected seconds, from past ledgers (an EWMA of its successes); None: no history.
    expected_s: float | None = None
    # Its expected peaks, RAM and GPU, from past ledgers (the largest of its recent
    # successes, plan.memory.PEAK_MARGIN added); None: not measured yet.
    expected_peak_mb: float | None = None
    expected_gpu_mb: float | None = None
    # More than one item per symbol: a backtest's walk-forward window, or a search's
    # candidate (its name and the trainer params it tries, in place of the plan's).
    window: ForecastWindow | None = None
    candidate: str | None = None
    params: Mapping[str, Any] | None = None

    @property
    def item_id(self) -> str:
        """The ledger's key: a nightly item is its symbol; "BTC/w0012" a backtest's window,
        "BTC/c03" a search's candidate."""
        if self.window is not None:
            return f"{self.symbol}/{self.window.name}"
        if self.candidate is not None:
            return f"{self.symbol}/{self.candidate}"
        return self.symbol


@dataclass(frozen=True)
class Plan:
    day: str
    layout: Layout
    items: tuple[PlanItem, ...]
    policy: RunPolicy
    resources: Resources
    trainer: str  # "package.module:function"
    trainer_params: dict[str, Any]  # validated by the trainer's params model
    min_rows: int
    data_format: DataFormat = PLAIN  # how the files name their columns and store time
    # What a person should know of how the symbols were chosen (topN, all): one line each.
    notes: tuple[str, ...] = ()
    # topN: files left out of the ranking because they cannot be read, symbol -> problem.
    unranked: Mapping[str, str] = field(default_factory=dict)
    # The items to run, by id, in the order they start ([run] order; empty: as listed).
    order: tuple[str, ...] = ()
    history: History = field(default_factory=History)  # what past ledgers measured
    forecast: Forecast | None = None  # when the queue should finish, from that history
    # "night": the nightly run; "backtest": a walk-forward backtest's windows (no champion
    # is judged, nothing is promoted).
    kind: Literal["night", "backtest"] = "night"

    @property
    def to_run(self) -> tuple[PlanItem, ...]:
        """The items to train, in the order they start."""
        runs = {i.item_id: i for i in self.items if i.action is Action.RUN}
        ordered = [runs.pop(item_id) for item_id in self.order if item_id in runs]
        return (*ordered, *runs.values())

    @property
    def deadline_warning(self) -> str | None:
        """Why the forecast misses the deadline, or None (it makes it, or there is none)."""
        deadline, at = self.policy.deadline, self.policy.deadline_at
        if self.forecast is None or deadline is None or at is None:
            return None
        return deadline_warning(self.forecast, deadline, at)

    @property
    def to_skip(self) -> tuple[PlanItem, ...]:
        return tuple(i for i in self.items if i.action is Action.SKIP)

    @property
    def to_fail(self) -> tuple[PlanItem, ...]:
        """Bad data: failed without an attempt."""
        return tuple(i for i in self.items if i.action is Action.FAIL)

    @property
    def fresh(self) -> tuple[PlanItem, ...]:
        """Skipped: nothing changed since their champions were trained."""
        return tuple(i for i in self.items if i.fresh)

    @property
    def stale(self) -> tuple[PlanItem, ...]:
        """Their data's last bar is older than [data] stale_after_hours."""
        return tuple(i for i in self.items if i.stale)

    @property
    def quarantined(self) -> tuple[PlanItem, ...]:
        """Skipped: they failed too many nights in a row."""
        return tuple(i for i in self.items if i.quarantine is not None)


def symbol_seed(base_seed: int, symbol: str) -> int:
    """A per-symbol seed independent of order and mode: the same metrics, run after run."""
    return (base_seed * 1_000_003 + zlib.crc32(symbol.encode("utf-8"))) % 2**31


def build_plan(
    settings: Settings, trainer: Trainer, resources: Resources, now: datetime, force: bool
) -> Plan:
    """trainer: the configured plug-in, loaded once by the caller."""
    layout = Layout(settings.run.root.resolve())
    day = run_day(now)
    params = validate_trainer_params(trainer, settings.trainer.params)
    search = settings.search if settings.search.enabled else None
    if search is not None:
        check_space(search, trainer, settings.trainer.plugin, params)
    data_format = data_format_of(settings)
    skip_bad = settings.data.on_bad == "skip"
    selection = select_symbols(
        settings.run.symbols,
        settings.data.path.resolve(),
        settings.data.topn_window_days,
        data_format,
        skip_unreadable=skip_bad,
    )
    checked = check_data(selection.symbols, settings, data_format, now)
    problems = [check.problem for check in checked.values() if check.problem]
    if problems and not skip_bad:
        raise BadInputError(
            'bad data, nothing was started ([data] on_bad = "fail"):\n  ' + "\n  ".join(problems)
        )
    ledger = read_ledger(layout.status_path(day), layout.journal_path(day))
    history = read_history(layout, day, history_days(settings.run.quarantine_after_nights))
    quarantines, releases, history_notes = _quarantines(settings, layout, history)
    items = []
    for symbol in selection.symbols:
        check = checked[symbol]
        # A nightly item's id is its symbol; a search's are its candidates' (below).
        previous, settled = (
            settled_entry(ledger.entries, symbol, layout) if search is None else (None, False)
        )
        action, why = decide(previous, layout, force)
        if check.problem is not None and action is Action.RUN:
            action, why = Action.FAIL, f"bad data: {check.problem}"
        quarantine = None if force or action is Action.SKIP else quarantines.get(symbol)
        if quarantine is not None:
            action, why = Action.SKIP, quarantine.why(symbol)
        elif action is Action.RUN and not force:
            note = release_note(
                history.of(symbol), releases.get(symbol), settings.run.quarantine_after_nights
            )
            why = f"{why}; {note}" if note else why
        seed = symbol_seed(settings.run.seed, symbol)
        tried: list[tuple[Candidate, dict[str, Any]]] = []
        if search is not None:
            tried = [(c, candidate_params(trainer, params, c)) for c in candidates(search, symbol)]
        fingerprinted = params if search is None else search_fingerprint(params, tried, settings)
        key = _inputs_key(check, settings.trainer.plugin, fingerprinted, seed)
        champion, champion_problem = _champion(layout, symbol)
        fresh_why = None
        if action is Action.RUN and not force and settings.run.skip_fresh:
            fresh_why = fresh_reason(layout, champion, key, history.of(symbol))
        if fresh_why is not None:
            action, why = Action.SKIP, fresh_why
        item = PlanItem(
            symbol,
            action,
            why,
            check.path,
            check.costs,
            seed,
            previous,
            settled,
            champion=champion,
            champion_problem=champion_problem,
            inputs_key=key,
            fresh=fresh_why is not None,
            last_bar=check.last_bar,
            stale=check.stale,
            quarantine=quarantine,
            expected_s=history.of(symbol).seconds,
            expected_peak_mb=expected_mb(history.of(symbol).peak_rss_mb),
            expected_gpu_mb=expected_mb(history.of(symbol).gpu_peak_mb),
        )
        if tried and action is Action.RUN:
            items += candidate_items(item, tried, ledger.entries, layout, force)
        else:
            items.append(item)
    runnable = sum(1 for i in items if i.action is Action.RUN)
    notes = [selection.note] if selection.note else []
    notes += [f"not ranked, unreadable: {problem}" for problem in selection.unranked.values()]
    notes += history_notes
    plan = Plan(
        day,
        layout,
        tuple(items),
        resolve_policy(settings, resources, runnable, memory_needs(items), has_prepare(trainer)),
        resources,
        settings.trainer.plugin,
        params,
        settings.data.min_rows,
        data_format,
        tuple(notes),
        dict(selection.unranked),
    )
    return scheduled(plan, settings.run, history, now)


def candidate_items(
    item: PlanItem,
    tried: list[tuple[Candidate, dict[str, Any]]],
    entries: Mapping[str, LedgerEntry],
    layout: Layout,
    force: bool,
) -> list[PlanItem]:
    """A searched symbol's items, one per candidate, each run or skipped by its own ledger
    entry (done today and verified: skipped, so a rerun resumes the search). They share the
    symbol's seed (plan/search.py says why) and the search's inputs key."""
    out = []
    for candidate, merged in tried:
        item_id = f"{item.symbol}/{candidate.name}"
        previous, settled = settled_entry(entries, item_id, layout)
        action, why = decide(previous, layout, force)
        if action is Action.RUN:
            why = f"{why}; search candidate {candidate.name} {_overlay(candidate.params)}"
        out.append(
            replace(
                item,
                action=action,
                why=why,
                previous=previous,
                settled=settled,
                candidate=candidate.name,
                params=merged,
            )
        )
    return out


def search_fingerprint(
    params: Mapping[str, Any], tried: list[tuple[Candidate, dict[str, Any]]], settings: Settings
) -> dict[str, Any]:
    """What a search's winner was chosen from, for its inputs key: the same data, trainer,
    candidates, metric and seed choose the same model (a fresh symbol need not search)."""
    return {
        "params": dict(params),
        "search": {
            "candidates": [{"name": c.name, "params": dict(c.params)} for c, _ in tried],
            "metric": settings.search.metric,
            "direction": settings.search.direction,
        },
    }


def _overlay(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def scheduled(plan: Plan, run: RunSettings, history: History, now: datetime) -> Plan:
    """The plan with its queue ([run] order: longest expected first, new symbols before
    them all; or as the plan lists them), its forecast, and its deadline as a moment."""
    expected = {item.item_id: item.expected_s for item in plan.to_run}
    order = longest_first(expected) if run.order == "longest_first" else tuple(expected)
    forecast = make_forecast(order, expected, plan.policy.window, now, history.startup_s)
    deadline_at = next_local_time(run.deadline, now) if run.deadline else None
    policy = replace(plan.policy, order=run.order, deadline=run.deadline, deadline_at=deadline_at)
    return replace(plan, order=order, history=history, forecast=forecast, policy=policy)


def _quarantines(
    settings: Settings, layout: Layout, history: History
) -> tuple[dict[str, Quarantine], dict[str, Release], list[str]]:
    """The symbols quarantined tonight (unless --force), the releases, and a note for each
    past ledger or releases file that could not be read (ignored, never a crash)."""
    releases, note = read_releases(layout)
    found = quarantined_symbols(history, releases, settings.run.quarantine_after_nights)
    return found, releases, [*history.notes, *([note] if note else [])]


def memory_needs(items: list[PlanItem]) -> MemoryNeeds:
    """The expected peaks of the items that run: what admission and GPU packing plan by."""
    runs = [item for item in items if item.action is Action.RUN]
    return MemoryNeeds(
        tuple(item.expected_peak_mb for item in runs),
        tuple(item.expected_gpu_mb for item in runs),
    )


def data_format_of(settings: Settings) -> DataFormat:
    """[data.columns] and [data] timestamp_unit, as the data module reads them."""
    return DataFormat(settings.data.columns.renamed(), settings.data.timestamp_unit)


@dataclass(frozen=True)
class DataCheck:
    path: Path
    costs: SymbolCosts | None
    problem: str | None  # the file and its first problem (row and time named), if bad
    data_sha256: str | None = None  # of the bars' values (freshness)
    last_bar: str | None = None
    stale: bool = False
    timestamps: Any = None  # the bars' times (int64 ns, numpy): a backtest cuts its windows


def _inputs_key(check: DataCheck, trainer: str, params: dict[str, Any], seed: int) -> str | None:
    if check.data_sha256 is None or check.costs is None:
        return None
    return inputs_key(
        data_sha256=check.data_sha256,
        trainer=trainer,
        params=params,
        costs=check.costs.to_dict(),
        seed=seed,
    )


def _champion(layout: Layout, symbol: str) -> tuple[Champion | None, str | None]:
    try:
        return read_champion(layout, symbol), None
    except ChampionError as exc:  # trained as if it had none; the gate then replaces it
        return None, str(exc)


def fresh_reason(
    layout: Layout, champion: Champion | None, key: str | None, past: SymbolHistory
) -> str | None:
    """Why the symbol need not train, or None: its champion was trained on exactly these
    inputs, or its latest challenger was and the gate kept it out (the same inputs train
    the same model); either way the champion must still verify."""
    if champion is None or key is None:
        return None
    if key not in (champion.inputs_key, past.kept_out_key):
        return None
    if champion_problems(layout, champion):
        return None
    if champion.inputs_key == key:
        return (
            f"fresh: data, trainer, params and costs unchanged since its champion "
            f"{champion.artifact_dir} ({champion.promoted_at})"
        )
    return (
        f"fresh: unchanged since its last challenger was kept out ({past.kept_out_why}); "
        f"its champion {champion.artifact_dir} stays"
    )


def check_data(
    symbols: list[str], settings: Settings, data_format: DataFormat, now: datetime
) -> dict[str, DataCheck]:
    """Load and validate every symbol's data before anything starts: its costs, or what
    is wrong with it."""
    data_dir = settings.data.path.resolve()
    checked: dict[str, DataCheck] = {}
    for symbol in symbols:
        path = find_data_file(data_dir, symbol)
        if path is None:  # gone since the symbols were chosen
            problem = f"{symbol}: no data file {data_dir}/{symbol}.parquet or .csv"
            checked[symbol] = DataCheck(data_dir / f"{symbol}.parquet", None, problem)
            continue
        try:
            timestamps, values = read_ohlcv(path, settings.data.min_rows, data_format)
        except DataError as exc:
            checked[symbol] = DataCheck(path, None, str(exc))
            continue
        costs = resolve_costs_from_arrays(
            symbol, timestamps, values["high"], values["low"], settings.costs, close=values["close"]
        )
        last_ns = int(timestamps.max())
        stale_after = settings.data.stale_after_hours
        age_h = (now.timestamp() * 1e9 - last_ns) / 3.6e12
        checked[symbol] = DataCheck(
            path,
            costs,
            None,
            data_values_sha256(timestamps, values),
            iso(datetime.fromtimestamp(last_ns / 1e9, tz=UTC)),
            stale_after is not None and age_h > stale_after,
            timestamps,
        )
    return checked


def settled_entry(
    entries: Mapping[str, LedgerEntry], item_id: str, layout: Layout
) -> tuple[LedgerEntry | None, bool]:
    """Today's entry of the item, as it really ended if a scheduler that died left it
    running; and whether it was so (the night records the settled entry)."""
    previous = entries.get(item_id)
    settled = needs_settling(previous)
    if previous is not None and settled:
        previous = settle(previous, layout)
    return previous, settled


def decide(previous: LedgerEntry | None, layout: Layout, force: bool) -> tuple[Action, str]:
    """Run or skip one symbol, with the reason shown in --dry_run and kept in the ledger."""
    if force:
        return Action.RUN, "--force"
    if previous is None:
        return Action.RUN, "not trained today"
    if previous.state is ItemState.SUCCESS:
        if previous.artifact_dir is None:
            return Action.RUN, "ledger says success but names no artifacts"
        problems = verify_manifest(layout.root / previous.artifact_dir, previous.manifest_sha256)
        if problems:
            return Action.RUN, f"artifacts do not verify: {problems[0]}"
        return Action.SKIP, f"succeeded today at {previous.updated_at}; artifacts verify"
    last = previous.last_attempt
    if last is not None and last.reason and previous.state is not ItemState.PENDING:
        return Action.RUN, f"earlier run today ended {previous.state.value}: {last.reason}"
    return Action.RUN, f"earlier run today left it {previous.state.value}"


def item_fields(item: PlanItem) -> dict[str, str]:
    """How a log line names an item: its symbol, and its id when there are more per symbol."""
    if item.item_id == item.symbol:
        return {"symbol": item.symbol}
    return {"symbol": item.symbol, "item": item.item_id}
