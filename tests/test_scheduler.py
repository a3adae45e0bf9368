"""The scheduler runs every job when due, one after the other, and a job that
fails is logged and runs again: it never stops the others."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gifting_server.scheduler import Scheduler


class Refused(Exception):
    pass


async def test_failing_jobs_are_logged_and_the_others_go_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs: list[str] = []
    fast_ran_five_times = asyncio.Event()

    async def fast() -> None:
        runs.append("fast")
        if runs.count("fast") == 5:
            fast_ran_five_times.set()

    async def slow() -> None:
        runs.append("slow")

    async def broken() -> None:
        runs.append("broken")
        raise RuntimeError("bug")

    async def refused() -> None:
        raise Refused("redis unavailable")

    scheduler = Scheduler(quiet=(Refused,))
    scheduler.every(0.01, "broken", broken)
    scheduler.every(0.01, "refused", refused)
    scheduler.every(0.01, "fast", fast)
    scheduler.every(10, "slow", slow)
    with caplog.at_level(logging.WARNING, logger="gifting_server.scheduler"):
        scheduler.start()
        # Five rounds after two failing jobs: the failures stopped nothing.
        await asyncio.wait_for(fast_ran_five_times.wait(), timeout=10)
        await scheduler.stop()
    assert runs.count("slow") == 1  # at the first tick, then not again within 10 s
    assert runs.count("fast") >= 5 and runs.count("broken") == runs.count("fast")
    logged = [(r.message, bool(r.exc_info)) for r in caplog.records]
    assert ("refused skipped: redis unavailable", False) in logged  # one line, no traceback
    assert ("broken failed", True) in logged
    assert scheduler.task is not None and scheduler.task.done()
