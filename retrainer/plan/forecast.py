"""The night's order and forecast: which item starts first, when each should start and end,
when the night should finish, and its deadline as a moment.

Longest first (LPT): the queue starts the items expected to take longest first, so that
a long item never starts last and adds its whole length to the night; an item without
history (a new symbol) is not known to be short, so it goes before all of them. The
forecast replays the engine's window rule on the expected durations: k slots, each item
to the slot that frees first, in queue order (Graham's list scheduling; with LPT it ends
within 4/3 of the best order, and far closer when items are many).

Everything here is a pure function of durations and clocks: the plan, the dry run, the
start message and the live view all ask the same questions of it.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from typing import Any

from retrainer.base.clock import iso

# An item no night has measured yet, when no item has been measured either.
DEFAULT_ITEM_S = 60.0
# A night's start to its first item's start, before any night has measured it.
DEFAULT_STARTUP_S = 5.0


def longest_first(expected: Mapping[str, float | None]) -> tuple[str, ...]:
    """Item ids in start order: those without history first, then the longest expected
    first; new and equal ones keep the plan's order (topN's volume rank, the list given),
    so a first night runs as the plan lists it and the order is the same night after night."""
    return tuple(sorted(expected, key=lambda i: (expected[i] is not None, -(expected[i] or 0.0))))


def fill_unknown(
    expected: Mapping[str, float | None], default_s: float = DEFAULT_ITEM_S
) -> dict[str, float]:
    """Each item's expected seconds; one without history counts as the median of those
    with (the typical item), else default_s."""
    known = [s for s in expected.values() if s is not None]
    typical = statistics.median(known) if known else default_s
    return {item: typical if s is None else s for item, s in expected.items()}


@dataclass(frozen=True)
class ItemForecast:
    item_id: str
    expected_s: float
    start_s: float  # from the first item's start
    end_s: float
    slot: int


def simulate(
    queue: Sequence[tuple[str, float]], slots: int, busy_s: Sequence[float] = ()
) -> tuple[ItemForecast, ...]:
    """The window rule on expected durations: each item, in queue order, starts in the
    slot that frees first. busy_s: slots still busy for that long (items already running);
    the others are free now."""
    width = max(1, slots, len(busy_s))
    free = [(busy_s[slot] if slot < len(busy_s) else 0.0, slot) for slot in range(width)]
    heapq.heapify(free)
    out = []
    for item_id, seconds in queue:
        start, slot = heapq.heappop(free)
        end = start + max(0.0, seconds)
        out.append(ItemForecast(item_id, seconds, start, end, slot))
        heapq.heappush(free, (end, slot))
    return tuple(out)


def makespan_s(items: Sequence[ItemForecast], busy_s: Sequence[float] = ()) -> float:
    """When the last item (or the last of those already running) ends."""
    return max([0.0, *(i.end_s for i in items), *busy_s])


@dataclass(frozen=True)
class Forecast:
    """When tonight's items should start and end, from their expected durations."""

    planned_at: datetime  # when the forecast was made (the plan)
    startup_s: float  # the night's start to its first item's start
    slots: int
    items: tuple[ItemForecast, ...]  # in queue order
    known: int  # items whose duration came from history
    new: int  # items without history: the typical duration assumed

    @property
    def makespan_s(self) -> float:
        return makespan_s(self.items)

    @property
    def finish_at(self) -> datetime:
        return self.planned_at + timedelta(seconds=self.startup_s + self.makespan_s)

    def starting_after(self, moment: datetime) -> int:
        """Items predicted to start after the moment (a deadline: they would not start)."""
        offset = (moment - self.planned_at).total_seconds() - self.startup_s
        return sum(1 for i in self.items if i.start_s >= offset)

    def to_record(self) -> dict[str, Any]:
        """Flat fields for the run record (and so for webhooks and the summary)."""
        return {
            "forecast_finish_at": iso(self.finish_at),
            "forecast_makespan_s": round(self.makespan_s, 1),
            "forecast_startup_s": round(self.startup_s, 1),
            "forecast_known": self.known,
            "forecast_new": self.new,
        }


def make_forecast(
    queue: Sequence[str],
    expected: Mapping[str, float | None],
    slots: int,
    planned_at: datetime,
    startup_s: float | None = None,
    default_s: float = DEFAULT_ITEM_S,
) -> Forecast:
    """queue: item ids in start order; expected: their seconds (None: no history)."""
    seconds = fill_unknown({i: expected.get(i) for i in queue}, default_s)
    items = simulate([(i, seconds[i]) for i in queue], slots)
    known = sum(1 for i in queue if expected.get(i) is not None)
    startup = DEFAULT_STARTUP_S if startup_s is None else startup_s
    return Forecast(planned_at, startup, slots, items, known, len(queue) - known)


def remaining_s(queued: Sequence[float], running_left_s: Sequence[float], slots: int) -> float:
    """What is left of a night: the queued items' durations (in start order) after the
    running ones' remainders, over the slots."""
    busy = sorted(max(0.0, s) for s in running_left_s)
    items = simulate([(str(n), s) for n, s in enumerate(queued)], slots, busy)
    return makespan_s(items, busy)


# -- the deadline -----------------------------------------------------------------------
def parse_clock(text: str) -> time:
    """ "06:00" or "06:00:30", a local time of day; ValueError otherwise."""
    parts = text.strip().split(":")
    if len(parts) not in (2, 3) or not all(p.isdigit() and 1 <= len(p) <= 2 for p in parts):
        raise ValueError(f"{text!r} is not a time of day: expected HH:MM, such as 06:00")
    hour, minute, second = (int(p) for p in [*parts, "0"][:3])
    try:
        return time(hour, minute, second)
    except ValueError:
        raise ValueError(f"{text!r} is not a time of day: expected HH:MM, such as 06:00") from None


def next_local_time(text: str, now: datetime) -> datetime:
    """The first moment after now at which this machine's local clock reads text: a night
    started at 22:00 with deadline 06:00 must be done by 06:00 the next morning, one
    started at 01:00 by 06:00 the same morning. Aware, in local time."""
    clock = parse_clock(text)
    local_now = now.astimezone()
    for days in range(3):  # three: a clock that a DST change skips today is there tomorrow
        day = local_now.date() + timedelta(days=days)
        candidate = datetime.combine(day, clock).astimezone()  # naive: read as local time
        if candidate > local_now:
            return candidate
    raise ValueError(f"no local time {text} in the next days")  # pragma: no cover


def local_clock(moment: datetime) -> str:
    """03:12, in this machine's local time."""
    return moment.astimezone().strftime("%H:%M")


def duration_text(seconds: float) -> str:
    """1h10m, 4m20s, 35s, 2.5s."""
    if seconds < 10:
        return f"{max(0.0, seconds):.1f}s"
    total = int(round(seconds))
    hours, minutes, secs = total // 3600, total % 3600 // 60, total % 60
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def forecast_line(forecast: Forecast, items: str = "symbols") -> str:
    """forecast: finishes at 03:12 local (makespan 1h10m, from 58 symbols' history; 2 new)"""
    where = f"from {forecast.known} {items}' history" if forecast.known else "no history yet"
    new = f"; {forecast.new} new" if forecast.new and forecast.known else ""
    return (
        f"forecast: finishes at {local_clock(forecast.finish_at)} local "
        f"(makespan {duration_text(forecast.makespan_s)}, {where}{new})"
    )


def deadline_warning(forecast: Forecast, deadline: str, deadline_at: datetime) -> str | None:
    """The warning when the forecast misses the deadline; None when it makes it."""
    if forecast.finish_at <= deadline_at:
        return None
    late = duration_text((forecast.finish_at - deadline_at).total_seconds())
    cut = forecast.starting_after(deadline_at)
    what = (
        f"{cut} of {len(forecast.items)} items would not start before it"
        if cut
        else "every item would start before it, the last ones finish after"
    )
    return f"WARNING: the forecast misses the deadline {deadline} local by {late}: {what}"
