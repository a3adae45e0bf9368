"""A broker and a history that live in this process: events published here are
kept in a capped history and delivered to the subscribed hub, with real asyncio
(each delivery is its own callback, as a read from pub/sub would be), for the
hub's tests. A slow or lost connection can be played: events published meanwhile
wait, or reach the history only."""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque

import orjson

from gifting_server.events import envelope_of
from gifting_server.hub.broker import OnEvent, OnResubscribed
from gifting_server.hub.history import Head, Replay
from gifting_server.hub.stream_state import StreamState


class MemoryHistory:
    """A `History`: each stream's newest `max_events` events."""

    def __init__(self, max_events: int = 10_000) -> None:
        self.max_events = max_events
        self.events: defaultdict[str, deque[tuple[int, bytes]]] = defaultdict(deque)
        self.seq: defaultdict[str, int] = defaultdict(int)
        self.viewers: defaultdict[str, int] = defaultdict(int)
        self.state: defaultdict[str, StreamState] = defaultdict(StreamState)

    def append(self, stream_id: str, event: dict[str, object]) -> bytes:
        """Store the event as the stream's next one; returns it as published."""
        event_id = self.seq[stream_id] = self.seq[stream_id] + 1
        raw = orjson.dumps({"event_id": event_id, **event})
        kept = self.events[stream_id]
        kept.append((event_id, raw))
        while len(kept) > self.max_events:
            kept.popleft()
        if event.get("kind") == "viewers":
            self.viewers[stream_id] = int(event.get("count", 0))  # type: ignore[call-overload]
        self.state[stream_id].take(envelope_of(raw).kind, raw)
        return raw

    async def head(self, stream_id: str) -> Head:
        state = self.state[stream_id]
        head = Head(
            self.seq[stream_id],
            self.viewers[stream_id],
            StreamState(state.alerts_paused, state.goal, state.coins_total, state.battle),
        )
        await _answer_travels()
        return head

    async def replay(self, stream_id: str, since: int) -> Replay:
        replay = self._read(stream_id, since)
        await _answer_travels()
        return replay

    def _read(self, stream_id: str, since: int) -> Replay:
        current = self.seq[stream_id]
        if since > current:
            return Replay(False, [], current)
        if since == current:
            return Replay(True, [], since)
        newer = [(event_id, raw) for event_id, raw in self.events[stream_id] if event_id > since]
        if not newer or newer[0][0] != since + 1:
            return Replay(False, [], current)
        return Replay(True, [raw for _, raw in newer], newer[-1][0])


async def _answer_travels() -> None:
    """What was read is answered a few loop passes later, as from Redis: events
    published meanwhile may reach the hub first."""
    for _ in range(3):
        await asyncio.sleep(0)


class MemoryBroker:
    """A `Broker` whose `publish` appends to `history` and delivers."""

    def __init__(self, history: MemoryHistory) -> None:
        self.history = history
        self.subscribed: set[str] = set()
        self.on_event: OnEvent | None = None
        self.on_resubscribed: OnResubscribed | None = None
        self.connected = True
        self.held: list[tuple[str, bytes]] | None = None

    def start(self, on_event: OnEvent, on_resubscribed: OnResubscribed) -> None:
        self.on_event, self.on_resubscribed = on_event, on_resubscribed

    async def stop(self) -> None:
        self.on_event = self.on_resubscribed = None

    async def subscribe(self, stream_id: str) -> None:
        self.subscribed.add(stream_id)
        await asyncio.sleep(0)  # a confirmation is an answer: others run meanwhile

    async def unsubscribe(self, stream_id: str) -> None:
        self.subscribed.discard(stream_id)
        await asyncio.sleep(0)

    def publish(self, stream_id: str, event: dict[str, object]) -> bytes:
        raw = self.history.append(stream_id, event)
        if self.connected and stream_id in self.subscribed:
            if self.held is not None:
                self.held.append((stream_id, raw))
            else:
                asyncio.get_running_loop().call_soon(self._deliver, stream_id, raw)
        return raw

    def hold(self) -> None:
        """Delay deliveries (already in the history) until `release`: a slow pub/sub."""
        if self.held is None:
            self.held = []

    def release(self) -> None:
        held, self.held = self.held or [], None
        for stream_id, raw in held:
            self._deliver(stream_id, raw)

    def lose_connection(self) -> None:
        """Until `reconnect`, published events reach the history only."""
        self.connected = False
        self.held = None

    def reconnect(self) -> None:
        self.connected = True
        for stream_id in self.subscribed:
            if self.on_resubscribed is not None:
                self.on_resubscribed(stream_id)

    def _deliver(self, stream_id: str, raw: bytes) -> None:
        if self.on_event is not None and stream_id in self.subscribed:
            self.on_event(stream_id, raw)
