"""What the hub needs from the carrier of events between workers. The hub knows
nothing else of it: `redis_broker.py` is the real one, `memory.py` keeps
everything in this process."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

OnEvent = Callable[[str, bytes], None]  # (stream_id, stored event)
OnResubscribed = Callable[[str], None]  # (stream_id)


class Broker(Protocol):
    """Calls `on_event(stream_id, raw)` for every published event of a subscribed
    stream, in publish order, and `on_resubscribed(stream_id)` after a lost
    connection came back (events published meanwhile must then be fetched from
    the history)."""

    def start(self, on_event: OnEvent, on_resubscribed: OnResubscribed) -> None: ...

    async def stop(self) -> None: ...

    async def subscribe(self, stream_id: str) -> None:
        """Returns once no later published event of the stream can be missed.
        Raises when that cannot be promised (the caller unsubscribes then)."""
        ...

    async def unsubscribe(self, stream_id: str) -> None: ...
