"""Time as the ledger counts it: unix milliseconds, UTC days and Monday-first weeks."""

from __future__ import annotations

import time

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def day_number(now_ms: int) -> int:
    return now_ms // DAY_MS


def week_number(now_ms: int) -> int:
    """Weeks start on Monday (UTC); day 0, 1970-01-01, was a Thursday."""
    return (day_number(now_ms) + 3) // 7


def held_until(earned_ms: int, hold_ms: int) -> int:
    """When diamonds earned at `earned_ms` are released: the holding period after that
    moment, rounded up to a whole UTC hour (held buckets are hourly), so never sooner.
    0 (a period of 0): they are not held at all."""
    if hold_ms <= 0:
        return 0
    return -(-(earned_ms + hold_ms) // HOUR_MS) * HOUR_MS
