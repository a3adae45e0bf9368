"""Runs named periodic jobs in one background task. A job that fails is logged and
runs again when next due; it never stops the others."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gifting_server.tasks import cancel_and_wait

log = logging.getLogger("gifting_server.scheduler")


@dataclass
class Job:
    name: str
    period_s: float
    run: Callable[[], Awaitable[None]]
    due: float = 0.0


class Scheduler:
    """Each job runs at the first tick after start, then every `period_s` (at tick
    granularity: the shortest period), one after the other in order of adding.
    An error of a `quiet` type is one warning line, any other a traceback."""

    def __init__(self, quiet: tuple[type[Exception], ...] = ()) -> None:
        self.quiet = quiet
        self.jobs: list[Job] = []
        self.task: asyncio.Task[None] | None = None

    def every(self, period_s: float, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self.jobs.append(Job(name, period_s, run))

    def start(self) -> None:
        self.task = asyncio.create_task(self._run(), name="scheduler")

    async def stop(self) -> None:
        if self.task:
            await cancel_and_wait(self.task)

    async def _run(self) -> None:
        if not self.jobs:
            return
        tick_s = min(job.period_s for job in self.jobs)
        while True:
            await asyncio.sleep(tick_s)
            now = time.monotonic()
            for job in self.jobs:
                if now < job.due:
                    continue
                job.due = now + job.period_s
                try:
                    await job.run()
                except self.quiet as e:
                    log.warning("%s skipped: %s", job.name, e)
                except Exception:
                    log.exception("%s failed", job.name)
