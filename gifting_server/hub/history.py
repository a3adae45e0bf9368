"""What the hub needs from the stream history that closes a joining client's gap:
`redis_history.py` is the real one, `memory.py` keeps it in this process."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Protocol

from gifting_server.hub.stream_state import StreamState


@dataclass(frozen=True)
class Replay:
    recovered: bool
    events: list[bytes]  # each a stored event, JSON
    last_event_id: int  # the newest event id known to the history (or `since`)


class Head(NamedTuple):
    last_event_id: int
    viewers: int
    state: StreamState


class History(Protocol):
    async def head(self, stream_id: str) -> Head:
        """The stream's newest event id, its last published viewer count and its state
        (`StreamState`), read together: a room that starts from that id starts with
        that count and state."""
        ...

    async def replay(self, stream_id: str, since: int) -> Replay:
        """Every event after `since`, in order, or recovered=False when some are gone
        (or `since` is newer than the stream: then `last_event_id` is its newest)."""
        ...
