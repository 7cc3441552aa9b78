"""The Plan: which items run or skip today, and why; their costs; the run's policy.

Building a plan reads the data, the ledger and the machine but writes nothing, so a dry
run is exactly this module plus printing.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from retrainer.base.artifacts import Layout, verify_manifest
from retrainer.base.clock import run_day
from retrainer.base.config import Settings
from retrainer.base.costs import SymbolCosts, resolve_costs_from_arrays
from retrainer.base.data import find_data_file, read_ohlcv
from retrainer.base.errors import BadInputError, DataError
from retrainer.base.resources import Resources
from retrainer.base.symbols import resolve_symbols
from retrainer.ledger.entries import ItemState, LedgerEntry
from retrainer.ledger.journal import read_ledger
from retrainer.ledger.recovery import needs_settling, settle
from retrainer.plan.policy import RunPolicy, resolve_policy
from retrainer.training.contract import Trainer, validate_trainer_params


class Action(StrEnum):
    RUN = "run"
    SKIP = "skip"


@dataclass(frozen=True)
class PlanItem:
    symbol: str
    action: Action
    why: str
    data_path: Path
    costs: SymbolCosts
    seed: int
    previous: LedgerEntry | None = None
    settled: bool = False  # previous was left running by a scheduler that died: record it

    @property
    def item_id(self) -> str:
        """The ledger's key: a nightly item is its symbol."""
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

    @property
    def to_run(self) -> tuple[PlanItem, ...]:
        return tuple(i for i in self.items if i.action is Action.RUN)

    @property
    def to_skip(self) -> tuple[PlanItem, ...]:
        return tuple(i for i in self.items if i.action is Action.SKIP)


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
    symbols = resolve_symbols(
        settings.run.symbols, settings.data.path.resolve(), settings.data.topn_window_days
    )
    costs = _costs_for(symbols, settings)
    ledger = read_ledger(layout.status_path(day), layout.journal_path(day))
    items = []
    for symbol in symbols:
        data_path, symbol_costs = costs[symbol]
        previous = ledger.entries.get(symbol)  # a nightly item's id is its symbol
        settled = needs_settling(previous)
        if previous is not None and settled:
            previous = settle(previous, layout)
        action, why = decide(previous, layout, force)
        items.append(
            PlanItem(
                symbol,
                action,
                why,
                data_path,
                symbol_costs,
                symbol_seed(settings.run.seed, symbol),
                previous,
                settled,
            )
        )
    runnable = sum(1 for i in items if i.action is Action.RUN)
    return Plan(
        day,
        layout,
        tuple(items),
        resolve_policy(settings, resources, runnable),
        resources,
        settings.trainer.plugin,
        params,
        settings.data.min_rows,
    )


def _costs_for(symbols: list[str], settings: Settings) -> dict[str, tuple[Path, SymbolCosts]]:
    """Load and validate every symbol's data before anything starts; report all problems."""
    data_dir = settings.data.path.resolve()
    found: dict[str, tuple[Path, SymbolCosts]] = {}
    problems: list[str] = []
    for symbol in symbols:
        path = find_data_file(data_dir, symbol)
        if path is None:
            problems.append(f"{symbol}: no data file {data_dir}/{symbol}.parquet or .csv")
            continue
        try:
            timestamps, values = read_ohlcv(path, settings.data.min_rows)
        except DataError as exc:
            problems.append(str(exc))
            continue
        found[symbol] = (
            path,
            resolve_costs_from_arrays(
                symbol, timestamps, values["high"], values["low"], settings.costs
            ),
        )
    if problems:
        raise BadInputError("bad data, nothing was started:\n  " + "\n  ".join(problems))
    return found


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
