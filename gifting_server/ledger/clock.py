"""Time as the ledger counts it: unix milliseconds, UTC days and Monday-first weeks."""

from __future__ import annotations

import time

DAY_MS = 86_400_000


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def day_number(now_ms: int) -> int:
    return now_ms // DAY_MS


def week_number(now_ms: int) -> int:
    """Weeks start on Monday (UTC); day 0, 1970-01-01, was a Thursday."""
    return (day_number(now_ms) + 3) // 7
