"""A stream's history read as its events, whatever its entries hold: an entry is one
event, or the events of one batched call to the stream after its first, one a line,
the entry's id its last event's (gifting_server/events.py)."""

from __future__ import annotations

from typing import Any

from gifting_server import events
from gifting_server.ledger import keys


async def history_raw(redis: Any, stream_id: str, since: int = 0) -> list[bytes]:
    """The history's events after `since`, as stored, in order; `redis` answers str
    or bytes (either client, either topology)."""
    rows = await redis.xrange(keys.stream_history(stream_id), min=f"{since + 1}-0")
    raws: list[bytes] = []
    for _, fields in rows:
        entry = fields["e"] if "e" in fields else fields[b"e"]
        raws += events.history_events(entry.encode() if isinstance(entry, str) else entry)
    return events.events_after(raws, since)


async def history_events(redis: Any, stream_id: str, since: int = 0) -> list[dict[str, Any]]:
    """The history's events after `since`, parsed, in order."""
    return [events.parse(raw) for raw in await history_raw(redis, stream_id, since)]


async def history_ids(redis: Any, stream_id: str) -> list[int]:
    """The event ids the history holds, in order."""
    return [events.event_id_of(raw) for raw in await history_raw(redis, stream_id)]
