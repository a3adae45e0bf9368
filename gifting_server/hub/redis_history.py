"""The history on Redis: the events a client missed, from the capped per-stream
Redis Stream, or the news that the gap is older than the history."""

from __future__ import annotations

from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gifting_server.events import event_id_of, events_after, history_events
from gifting_server.hub.history import Head, Replay
from gifting_server.hub.stream_state import StreamState
from gifting_server.ledger import keys

REPLAY_CHUNK = 500


class RedisHistory:
    """A `History` on one Redis or a cluster: every key it reads is one stream's,
    in the stream's slot, so the replay's transaction runs on that slot's master."""

    def __init__(self, redis: Redis | RedisCluster) -> None:
        self.redis = redis  # a client with decode_responses=False

    async def head(self, stream_id: str) -> Head:
        fields = ["seq", "last_viewers", "alerts_paused", "goal", "coins", "battle_pub"]
        head: list[Any] = await self.redis.hmget(keys.stream(stream_id), fields)
        seq, viewers, paused, goal, coins, battle = head
        count = orjson.loads(b"{" + viewers + b"}").get("count", 0) if viewers else 0
        state = StreamState.stored(paused, goal, coins, battle)
        return Head(int(seq or 0), int(count), state)

    async def replay(self, stream_id: str, since: int) -> Replay:
        key = keys.stream_history(stream_id)
        # The first chunk and the stream's newest id in one transaction: read apart,
        # an event appended in between looks like a gap.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.xrange(key, min=f"{since + 1}-0", max="+", count=REPLAY_CHUNK)
            pipe.hget(keys.stream(stream_id), "seq")
            answers: list[Any] = await pipe.execute()
        rows: list[tuple[bytes, dict[bytes, bytes]]] = answers[0]
        seq: bytes | None = answers[1]
        current = int(seq or 0)
        if since > current:
            # Newer than anything this stream has: not an event_id of it (a client's
            # stale or made-up id). Answer not recovered, so it takes live events
            # from `current` on instead of silently skipping up to `since`.
            return Replay(False, [], current)
        if since == current:
            return Replay(True, [], since)
        # The entry holding `since + 1` may hold events before it too (an entry of a
        # batched call's events: events.py).
        events = events_after(_events(rows), since)
        if not events or event_id_of(events[0]) != since + 1:
            return Replay(False, [], current)
        while len(rows) == REPLAY_CHUNK:
            # Later chunks go on from what was read; ids only grow, so all that
            # matters is that none is skipped (trimmed away meanwhile).
            rows = await self.redis.xrange(
                key, min="(" + rows[-1][0].decode(), max="+", count=REPLAY_CHUNK
            )  # type: ignore[assignment]
            more = _events(rows)
            if more and event_id_of(more[0]) != event_id_of(events[-1]) + 1:
                return Replay(False, [], event_id_of(more[-1]))
            events += more
        return Replay(True, events, event_id_of(events[-1]))


def _events(rows: list[tuple[bytes, dict[bytes, bytes]]]) -> list[bytes]:
    return [event for _, fields in rows for event in history_events(fields[b"e"])]
