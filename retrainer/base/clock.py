"""The clock: every time retrainer records is UTC, and these are its spellings."""

from __future__ import annotations

import re
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


RUN_DAY_FORMS = "YYYYMMDDZ, YYYYMMDD or YYYY-MM-DD"
_RUN_DAY = re.compile(r"(\d{4})(-?)(\d{2})\2(\d{2})Z?", re.IGNORECASE)


def parse_run_day(text: str) -> str:
    """A UTC day as run_day spells it (20261201Z), from 20261201Z, 20261201 or 2026-12-01;
    ValueError naming the accepted forms for anything else, or a day not in the calendar."""
    match = _RUN_DAY.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is not a UTC day: expected {RUN_DAY_FORMS}")
    year, month, day = int(match[1]), int(match[3]), int(match[4])
    try:
        datetime(year, month, day, tzinfo=UTC)
    except ValueError:
        raise ValueError(f"{text!r} is not a day of the calendar ({RUN_DAY_FORMS})") from None
    return f"{year:04d}{month:02d}{day:02d}Z"
