"""Retry backoff: a pure function of the attempt number (dramatiq's compute_backoff)."""

from __future__ import annotations

import random


def backoff_s(retry: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff before retry number `retry` (1 for the first).

    The ceiling doubles each retry up to `cap_s`; the delay is uniform below it, so a
    burst of failures does not come back in lock step.
    """
    if retry < 1:
        raise ValueError(f"retry numbers start at 1, got {retry}")
    ceiling = min(cap_s, base_s * 2.0 ** min(retry - 1, 62))
    return rng.uniform(0.0, ceiling)
