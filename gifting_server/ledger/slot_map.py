"""Reading a Redis Cluster's slot map again, bounded: a call waits for it no longer
than for any other answer.

redis-py reads the map from each known node in turn, each with the full socket
timeout: with every node hung that is six timeouts, and every call that needed the
map waited for it behind the others, one reading each. Here concurrent readers share
one reading, and the reading fails after `budget_s`: the calls that needed it fail
then, as nothing was sent (`SlotMapUnreadable` is a `NotSent`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from redis import exceptions as redis_errors

from gifting_server.ledger.pipeline import NotSent


class SlotMapUnreadable(NotSent):
    """No node gave the slot map in time: nothing was sent."""


class SlotMapReader:
    def __init__(self, read: Callable[[], Awaitable[object]], budget_s: float) -> None:
        """`read` reads the map (e.g. `nodes_manager.initialize`); it is cancelled
        after `budget_s`."""
        self._read = read
        self.budget_s = budget_s
        self._reading: asyncio.Future[None] | None = None

    async def read(self) -> None:
        """Reads the map, or waits for the reading under way; `SlotMapUnreadable` when
        it fails."""
        if self._reading is None:
            self._reading = asyncio.ensure_future(self._bounded())
            # Its failure is read here too: every caller may have been cancelled.
            self._reading.add_done_callback(lambda done: done.cancelled() or done.exception())
        reading = self._reading
        try:
            await asyncio.shield(reading)
        finally:
            if reading.done() and self._reading is reading:
                self._reading = None

    async def _bounded(self) -> None:
        try:
            async with asyncio.timeout(self.budget_s):
                await self._read()
        except (OSError, redis_errors.RedisError, redis_errors.RedisClusterException) as e:
            raise SlotMapUnreadable(f"cannot read the cluster's slot map: {e!r}") from None
