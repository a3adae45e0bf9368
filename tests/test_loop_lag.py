"""The event loop's standing lag: the loop really blocked (time.sleep on it), no
clock of the test's own."""

from __future__ import annotations

import asyncio
import time

from gifting_server.loop_lag import INTERVAL_S, LoopLag

BLOCK_S = 0.06  # each block: far past INTERVAL_S


async def next_tick(monitor: LoopLag) -> None:
    """Until the monitor's timer has run once more."""
    due = monitor.due
    while monitor.due == due:
        await asyncio.sleep(0)


def test_outside_a_running_loop_there_is_no_lag() -> None:
    assert LoopLag().lag() == 0.0


async def test_one_long_pause_is_no_standing_lag() -> None:
    monitor = LoopLag()
    assert monitor.lag() == 0.0  # the first ask starts the timer
    time.sleep(BLOCK_S)
    await next_tick(monitor)
    assert monitor.late >= BLOCK_S - INTERVAL_S  # it ran late once,
    assert monitor.lag() == 0.0  # and is on time again


async def test_a_loop_blocked_pass_after_pass_shows_its_lag() -> None:
    monitor = LoopLag()
    monitor.lag()
    time.sleep(BLOCK_S)
    await next_tick(monitor)
    time.sleep(BLOCK_S)  # blocked again before the timer could run: overdue now
    assert monitor.lag() >= BLOCK_S - INTERVAL_S
    await next_tick(monitor)  # late twice in a row
    assert monitor.lag() >= BLOCK_S - INTERVAL_S
    async with asyncio.timeout(10):  # then on time again: late by a timer's jitter
        while monitor.lag() >= BLOCK_S - INTERVAL_S:
            await next_tick(monitor)
