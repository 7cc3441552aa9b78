"""Modes decide WHEN items start: how many may run at once. They never touch processes."""

from __future__ import annotations

from collections.abc import Callable

from retrainer.base.config import Mode

# (items, max_concurrent, machine_slots) -> how many items may run at once.
WindowRule = Callable[[int, int, int], int]


def _sequential(items: int, max_concurrent: int, machine_slots: int) -> int:
    return 1


def _parallel(items: int, max_concurrent: int, machine_slots: int) -> int:
    # Every item may start at once, bounded only by the machine.
    return max(1, min(items, machine_slots))


def _hybrid(items: int, max_concurrent: int, machine_slots: int) -> int:
    # A sliding window: a new item starts the moment one ends, never more than the cap.
    return max(1, min(items, max_concurrent))


MODES: dict[Mode, WindowRule] = {
    Mode.SEQUENTIAL: _sequential,
    Mode.PARALLEL: _parallel,
    Mode.HYBRID: _hybrid,
}


def window_size(mode: Mode, items: int, max_concurrent: int, machine_slots: int) -> int:
    return MODES[mode](items, max_concurrent, machine_slots)
