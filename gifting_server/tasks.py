"""Background tasks that must really end when the server stops."""

from __future__ import annotations

import asyncio
import contextlib


async def cancel_and_wait(task: asyncio.Task[None]) -> None:
    """Cancel a background loop and wait until it ended. One cancel() is not always
    enough: on Python 3.11, asyncio.wait_for (used inside redis-py) swallows a
    cancellation that races with the completion of what it waits for, and the loop
    then goes on. So cancel again until the task is done."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await task
