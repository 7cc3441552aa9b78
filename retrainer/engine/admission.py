"""Memory admission: an item starts only while the expected peaks of the running items
plus its own fit in the memory budget, on top of the window's free slots.

Each item is planned at its expected peak (plan.memory: its history's largest recent
peak, with a margin), never above the per-item cap `max_memory_mb`, which stays the hard
limit. An item never measured is planned at the cap until the night's first such item
(the probe) succeeds; the largest peak measured of those then stands for the others.

The rule when an item does not fit: it is held (`item_held` in the log, once per item),
keeps its place at the head, and is tried first again whenever memory frees. Items behind
it that fit may start ahead of it, but no more than a window's worth of them per held
item; after that nothing passes it, so a large item waits at most one wave of small
ones. Nothing ever waits for memory while nothing runs: then the head starts whatever its
estimate (the cap still protects the machine), so admission never deadlocks.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from retrainer.ledger.entries import ItemState, Outcome
from retrainer.plan.memory import PEAK_MARGIN, admitted_peak_mb
from retrainer.plan.planner import PlanItem

ITEM_HELD = "item_held"


class Admission:
    def __init__(self, budget_mb: int | None, cap_mb: int, passes: int, log: Any) -> None:
        """budget_mb: None admits everything (a cluster places items itself). passes: how
        many items may start ahead of one that is held (the window)."""
        self.budget_mb = budget_mb
        self.cap_mb = cap_mb
        self.passes = passes
        self.log = log
        self._running: dict[int, float] = {}  # slot → the peak it was admitted at
        self._unknown: dict[int, str] = {}  # slot → id, of running items never measured
        self._awaiting: set[str] = set()  # those ended, their peak not read yet
        self._probe_mb: float | None = None  # the largest peak measured of unknown items
        self._passed: dict[str, int] = {}  # held item → items started ahead of it
        self._logged: set[str] = set()

    @property
    def used_mb(self) -> float:
        return sum(self._running.values())

    @property
    def free_mb(self) -> float | None:
        return None if self.budget_mb is None else self.budget_mb - self.used_mb

    def expected_mb(self, item: PlanItem) -> float:
        """The peak the item is admitted at: its own expected one; for an item never
        measured, what the probe measured, else the per-item cap."""
        expected = item.expected_peak_mb if item.expected_peak_mb is not None else self._probe_mb
        return admitted_peak_mb(expected, self.cap_mb)

    def fits(self, item: PlanItem) -> bool:
        if self.budget_mb is None or self.used_mb + self.expected_mb(item) <= self.budget_mb:
            return True
        if self._awaiting and self._probe_mb is None and item.expected_peak_mb is None:
            return False  # the probe's peak arrives with its outcome, in milliseconds
        return not self._running  # nothing runs: the head starts (never a deadlock)

    def choose(self, queue: Iterable[PlanItem]) -> PlanItem | None:
        """The first item of the queue (in its order) that may start now, or None: wait.
        An item that does not fit is held; an item behind it may pass it only while it
        has passes left."""
        held: list[PlanItem] = []
        for item in queue:
            if self.fits(item):
                if any(self._passed.get(h.item_id, 0) >= self.passes for h in held):
                    return None
                for h in held:
                    self._passed[h.item_id] = self._passed.get(h.item_id, 0) + 1
                return item
            held.append(item)
            self._hold(item)
        return None

    def _hold(self, item: PlanItem) -> None:
        if item.item_id in self._logged:
            return
        self._logged.add(item.item_id)
        free = self.free_mb
        self.log.info(
            ITEM_HELD,
            symbol=item.symbol,
            expected_mb=round(self.expected_mb(item)),
            free_mb=None if free is None else round(free),
            budget_mb=self.budget_mb,
            running=len(self._running),
            measured=item.expected_peak_mb is not None or self._probe_mb is not None,
        )

    def started(self, slot: int, item: PlanItem) -> None:
        self._running[slot] = self.expected_mb(item)
        self._passed.pop(item.item_id, None)
        if item.expected_peak_mb is None:
            self._unknown[slot] = item.item_id

    def released(self, slot: int) -> None:
        """Its process ended: what it held is free."""
        self._running.pop(slot, None)
        unknown = self._unknown.pop(slot, None)
        if unknown is not None:
            self._awaiting.add(unknown)

    def measured(self, item: PlanItem, outcome: Outcome) -> None:
        """An item never measured before succeeded: its peak is the estimate of the
        others not measured yet (the probe), the largest such peak if several."""
        self._awaiting.discard(item.item_id)
        if item.expected_peak_mb is not None or outcome.state is not ItemState.SUCCESS:
            return
        if outcome.peak_rss_mb is None:
            return
        peak = outcome.peak_rss_mb * PEAK_MARGIN
        self._probe_mb = max(self._probe_mb or 0.0, peak)
