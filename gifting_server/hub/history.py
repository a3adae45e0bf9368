"""Stream history and recovery: the events a client missed, from the capped
per-stream Redis Stream, or the news that the gap is older than the history."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from gifting_server.ledger import keys

REPLAY_CHUNK = 500


@dataclass(frozen=True)
class Replay:
    recovered: bool
    events: list[bytes]  # each a stored event, JSON
    last_event_id: int  # the newest event id known to the history (or `since`)


def event_id_of(raw: bytes) -> int:
    """Stored events start with {"event_id":N, — read N without decoding the rest."""
    start = raw.index(b":") + 1
    return int(raw[start : raw.index(b",", start)])


class StreamHistory:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis  # a client with decode_responses=False

    async def last_event_id(self, stream_id: str) -> int:
        seq = await self.redis.hget(keys.stream(stream_id), "seq")
        return int(seq or 0)

    async def replay(self, stream_id: str, since: int) -> Replay:
        """Every event after `since`, in order, or recovered=False when some are gone."""
        key = keys.stream_history(stream_id)
        events: list[bytes] = []
        start = f"{since + 1}-0"
        while True:
            rows: list[tuple[bytes, dict[bytes, bytes]]] = await self.redis.xrange(
                key, min=start, max="+", count=REPLAY_CHUNK
            )  # type: ignore[assignment]
            events.extend(fields[b"e"] for _, fields in rows)
            if len(rows) < REPLAY_CHUNK:
                break
            start = "(" + rows[-1][0].decode()
        current = await self.last_event_id(stream_id)
        if since > current:
            # Newer than anything this stream has: not an event_id of it (a client's
            # stale or made-up id). Answer not recovered, so it takes live events
            # from `current` on instead of silently skipping up to `since`.
            return Replay(False, [], current)
        if since == current:
            return Replay(True, [], since)
        first_kept = event_id_of(events[0]) if events else current + 1
        if first_kept != since + 1:
            return Replay(False, [], current)
        return Replay(True, events, event_id_of(events[-1]))
