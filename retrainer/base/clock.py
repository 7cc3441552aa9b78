"""The clock: every time retrainer records is UTC, and these are its spellings."""

from __future__ import annotations

from datetime import UTC, datetime


def run_day(now: datetime) -> str:
    """The UTC day a run belongs to, as used in folder names: 20261123Z."""
    return now.astimezone(UTC).strftime("%Y%m%dZ")


def attempt_stamp(now: datetime) -> str:
    """The name of one attempt's model folder: 20261123_020000Z."""
    return now.astimezone(UTC).strftime("%Y%m%d_%H%M%SZ")


def now_utc() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
