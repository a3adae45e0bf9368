"""Viewer presence: each worker writes its local viewer count of a stream into the
stream's presence hash (worker → `<count>|<expires ms>`); the stream's count is the
sum of the entries that have not expired, published as its `viewers` state."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Mapping

from gifting_server.ledger import keys, stream_state
from gifting_server.ledger.store import Store, guarded
from gifting_server.tasks import for_each_stream

PRESENCE_TTL_MS = 10_000


def entry(count: int, expires_ms: int) -> str:
    return f"{count}|{expires_ms}"


def parse_entry(value: str) -> tuple[int, int]:
    """(count, expires ms) of one worker's entry."""
    count, _, expires = value.partition("|")
    return int(count), int(expires)


async def publish_total(store: Store, worker_id: str, stream_id: str, local: int) -> int:
    """Write this worker's count (none: remove its entry), drop expired entries, and
    publish the stream's total; returns it."""
    now = store.clock()
    key = keys.presence(stream_id)
    redis = store.redis
    if local:
        await guarded(redis.hset(key, worker_id, entry(local, now + PRESENCE_TTL_MS)))
        await guarded(redis.pexpire(key, PRESENCE_TTL_MS * 6))
    else:
        await guarded(redis.hdel(key, worker_id))
    entries: dict[str, str] = await guarded(redis.hgetall(key))  # type: ignore[arg-type]
    total, stale = 0, []
    for worker, value in entries.items():
        count, expires = parse_entry(value)
        if expires < now:
            stale.append(worker)
        else:
            total += count
    if stale:
        await guarded(redis.hdel(key, *stale))
    await stream_state.publish_viewers(store, stream_id, total)
    return total


class Presence:
    """This worker's presence: each stream's count once a second per stream, a
    stream it just began to serve at once, and one whose last local viewer left
    one more time (its entry removed, so the count drops at once instead of when
    the entry expires)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.reported_at: dict[str, float] = {}  # stream → when (monotonic s) last reported

    async def report(self, served: Mapping[str, int]) -> None:
        """`served`: stream → local viewers, for every stream this worker serves, as
        it is when each stream's turn comes (a live view)."""
        now = time.monotonic()

        async def report_one(stream_id: str) -> None:
            if now - self.reported_at.get(stream_id, float("-inf")) < stream_state.PUBLISH_EVERY_S:
                return
            local = served.get(stream_id, 0)
            await publish_total(self.store, self.worker_id, stream_id, local)
            if local or stream_id in served:
                self.reported_at[stream_id] = now
            else:
                del self.reported_at[stream_id]

        await for_each_stream(set(served) | set(self.reported_at), report_one)
