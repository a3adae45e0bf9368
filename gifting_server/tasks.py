"""Background tasks that must really end when the server stops, and periodic work
over many streams that goes on past one stream's failure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable


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


STREAMS_AT_ONCE = 64  # well below the Redis pool's 256 connections


async def for_each_stream(
    stream_ids: Iterable[str],
    work: Callable[[str], Awaitable[object]],
    at_once: int = STREAMS_AT_ONCE,
) -> None:
    """Run `work` for every stream, all at once (their script calls share the loop
    pass's pipeline, and a Redis that stopped answering costs one timeout, not one
    per stream), each to its end even when it fails for some: one stream's broken
    keys, or its Redis Cluster shard being down, must not stop the periodic work of
    the others. Then raises the first failure, if any, for the scheduler to report.
    At most `at_once` streams are in flight: a worker following thousands of streams
    must not queue thousands of calls for the pool's connections."""
    turns = asyncio.Semaphore(at_once)

    async def one(stream_id: str) -> object:
        async with turns:
            return await work(stream_id)

    results = await asyncio.gather(*(one(s) for s in stream_ids), return_exceptions=True)
    for result in results:
        if isinstance(result, Exception):
            raise result
