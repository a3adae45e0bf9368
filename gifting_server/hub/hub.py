"""The local registry and fan-out: stream → connections of this worker.

Events arrive in order from the broker. A pass writes each connection of the
stream one frame with the events it is owed, without awaiting any of them, a few
dozen connections per loop pass so that gifts and new events are still read.
Connections sit in batches that have every event up to the same id: a batch
shares one frame, encoded once. An event that arrives during a pass still reaches
the batches the pass has not written yet; a busy stream then rests for a tick
before the next pass, so that its frames carry more events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis

from gifting_server import metrics
from gifting_server.config import Settings
from gifting_server.hub.broker import RedisBroker
from gifting_server.hub.history import StreamHistory, event_id_of
from gifting_server.protocol import Encoding, encode, events_payload, websocket_frame

log = logging.getLogger("gifting_server.hub")

RECENT_EVENTS = 4096  # events kept per stream to close the gap of a joining client
REPLAY_FRAME_EVENTS = 200
# Connections written per loop pass (under a millisecond), so that gifts and new
# events are read while a pass goes on; also the most connections a batch holds.
STEP_WRITES = 64
# A slow pass shortens the rest after it: viewers of a busy stream get a frame
# at least this often (in ticks) while a pass takes less.
BUSY_PERIOD_TICKS = 3


class Member(Protocol):
    encoding: Encoding
    send: Callable[[bytes], None]  # writes one complete frame, or queues or drops it

    @property
    def closed(self) -> bool: ...


@dataclass(eq=False)
class Batch:
    """Connections of one encoding that have every event up to `upto`."""

    encoding: Encoding
    upto: int
    members: dict[Member, None] = field(default_factory=dict)  # an ordered set


@dataclass
class Room:
    """This worker's view of one stream."""

    stream_id: str
    last_seen: int = 0  # newest event id taken from the broker
    # Every local connection of the stream is in one batch; furthest behind first.
    lineup: deque[Batch] = field(default_factory=deque)
    batch_of: dict[Member, Batch] = field(default_factory=dict)
    # Taken events, oldest first: at least RECENT_EVENTS, and all that anyone is owed.
    recent: deque[bytes] = field(default_factory=deque)
    flush_at: asyncio.TimerHandle | asyncio.Handle | None = None
    passing: bool = False
    pass_upto: int = 0  # the pass under way writes the batches behind this
    pass_started: float = float("-inf")
    observed: int = 0  # newest event whose delivery latency is recorded
    joining: int = 0
    filling: bool = False
    held: list[bytes] = field(default_factory=list)
    viewers: int = 0  # across all workers, as last published

    def local_count(self) -> int:
        return len(self.batch_of)


class Hub:
    def __init__(self, redis: Redis, settings: Settings) -> None:
        self.redis = redis  # bytes in and out (decode_responses=False)
        self.settings = settings
        self.tick_s = settings.websocket.tick_ms / 1000
        self.history = StreamHistory(redis)
        self.broker = RedisBroker(redis, self._on_event, self._on_resubscribed)
        self.rooms: dict[str, Room] = {}
        self._room_ready: dict[str, asyncio.Future[Room]] = {}
        self.gifted_streams: dict[str, float] = {}  # stream → until when to sweep its streaks
        self.connections: set[Member] = set()  # every open connection, for the heartbeat

    def start(self) -> None:
        self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()

    def note_gift(self, stream_id: str) -> None:
        """This worker sent a gift to the stream: keep closing its streaks for a while."""
        window_s = self.settings.limits.combo_window_ms / 1000
        self.gifted_streams[stream_id] = time.monotonic() + 2 * window_s + 1

    # -- joining and leaving -------------------------------------------------

    async def join(self, member: Member, stream_id: str, since: int | None) -> None:
        """Send `subscribed`, then every event after `since` in order, then live ones."""
        room = await self._room(stream_id)
        # A resubscribe (e.g. with `since`): out of its batch now, so that no live
        # event reaches it besides its catch-up; the room stays (it is joining).
        self._unplace(room, member)
        room.joining += 1
        try:
            recovered, catch_up, upto = await self._catch_up(room, since)
        finally:
            room.joining -= 1
        if member.closed:
            self._drop_if_empty(room)
            return
        # Joined meanwhile (two subscribes on their way at once): this join replaces
        # it, else the member would sit in two batches and get every event twice.
        self._unplace(room, member)
        subscribed = {
            "type": "subscribed",
            "stream_id": stream_id,
            "recovered": recovered,
            "viewers": max(room.viewers, room.local_count() + 1),
            "last_event_id": max(upto, room.last_seen),
        }
        member.send(websocket_frame(encode(subscribed, member.encoding), member.encoding))
        for start in range(0, len(catch_up), REPLAY_FRAME_EVENTS):
            chunk = catch_up[start : start + REPLAY_FRAME_EVENTS]
            member.send(
                websocket_frame(events_payload(stream_id, chunk, member.encoding), member.encoding)
            )
        has = max(upto, room.last_seen if since is None else upto)
        joined = room.batch_of[member] = Batch(member.encoding, has, {member: None})
        self._place(room, joined)
        metrics.SUBSCRIPTIONS.inc()

    async def _catch_up(self, room: Room, since: int | None) -> tuple[bool, list[bytes], int]:
        if since is None:
            return True, [], room.last_seen
        replay = await self.history.replay(room.stream_id, since)
        if not replay.recovered:
            return False, [], replay.last_event_id
        events, upto = list(replay.events), replay.last_event_id
        for _ in range(3):
            newer = _events_after(room.recent, upto)
            if not newer or event_id_of(newer[0]) == upto + 1:
                events += newer
                return True, events, event_id_of(events[-1]) if events else upto
            more = await self.history.replay(room.stream_id, upto)  # flushed past our read
            if not more.recovered:
                return False, [], more.last_event_id
            events += more.events
            upto = more.last_event_id
        return True, events, upto

    def leave(self, member: Member, stream_id: str) -> bool:
        room = self.rooms.get(stream_id)
        if room is None or (batch := room.batch_of.pop(member, None)) is None:
            return False
        del batch.members[member]  # an emptied batch leaves the lineup when its turn comes
        metrics.SUBSCRIPTIONS.dec()
        self._drop_if_empty(room)
        return True

    @staticmethod
    def _unplace(room: Room, member: Member) -> None:
        if (batch := room.batch_of.pop(member, None)) is not None:
            del batch.members[member]  # an emptied batch leaves the lineup in its turn
            metrics.SUBSCRIPTIONS.dec()

    async def _room(self, stream_id: str) -> Room:
        room = self.rooms.get(stream_id)
        if room is not None:
            return room
        ready = self._room_ready.get(stream_id)
        if ready is None:
            ready = self._room_ready[stream_id] = asyncio.get_running_loop().create_future()
            try:
                await self.broker.subscribe(stream_id)
                room = Room(stream_id, last_seen=await self.history.last_event_id(stream_id))
                self.rooms[stream_id] = room
                ready.set_result(room)
            except BaseException as e:
                # Other joiners waiting on this get an error they answer with an
                # error frame, never our own cancellation.
                failure = e if isinstance(e, Exception) else ConnectionError("subscribe cut short")
                ready.set_exception(failure)
                ready.exception()  # read here, so asyncio does not log it as lost
                await self.broker.unsubscribe(stream_id)
                raise
            finally:
                del self._room_ready[stream_id]
        return await asyncio.shield(ready)

    def _drop_if_empty(self, room: Room) -> None:
        if room.local_count() or room.joining or self.rooms.get(room.stream_id) is not room:
            return
        del self.rooms[room.stream_id]
        if room.flush_at:
            room.flush_at.cancel()
        asyncio.get_running_loop().create_task(self.broker.unsubscribe(room.stream_id))

    # -- events from the broker -----------------------------------------------

    def _on_event(self, stream_id: str, raw: bytes) -> None:
        room = self.rooms.get(stream_id)
        if room is None:
            return
        if room.filling:
            room.held.append(raw)
            return
        event_id = event_id_of(raw)
        if event_id <= room.last_seen:
            return  # already taken (a replay after a reconnect overlaps)
        if event_id > room.last_seen + 1:
            log.warning(
                "stream %s: events %d..%d missing from pub/sub; fetching them from history",
                stream_id,
                room.last_seen + 1,
                event_id - 1,
            )
            room.held.append(raw)
            self._fill_gap(room)
            return
        self._accept(room, event_id, raw)

    def _on_resubscribed(self, stream_id: str) -> None:
        room = self.rooms.get(stream_id)
        if room is not None and not room.filling:
            self._fill_gap(room)

    def _fill_gap(self, room: Room) -> None:
        room.filling = True

        async def fill() -> None:
            # Until the history answers, newer events wait in `held`: stepping over
            # the gap would let viewers miss events without knowing it.
            delay = 0.1
            while self.rooms.get(room.stream_id) is room:
                try:
                    replay = await self.history.replay(room.stream_id, room.last_seen)
                    break
                except Exception as e:
                    log.warning(
                        "stream %s: could not fetch missed events (%s); retrying in %.1fs",
                        room.stream_id, e, delay,
                    )  # fmt: skip
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
            else:
                return  # the room is gone: nobody to deliver to
            for raw in replay.events:
                self._take(room, raw)
            room.filling = False
            held, room.held = room.held, []
            for raw in held:
                self._take(room, raw)

        asyncio.get_running_loop().create_task(fill())

    def _take(self, room: Room, raw: bytes) -> None:
        event_id = event_id_of(raw)
        if event_id > room.last_seen:
            self._accept(room, event_id, raw)

    def _accept(self, room: Room, event_id: int, raw: bytes) -> None:
        room.last_seen = event_id
        room.recent.append(raw)
        if room.flush_at is None:
            self._schedule_pass(room)

    def _schedule_pass(self, room: Room, rest: float = 0.0) -> None:
        loop = asyncio.get_running_loop()
        # An idle stream starts a pass at once (after this loop pass), but at most
        # one pass starts per tick: a small, busy stream still sends full frames.
        delay = max(rest, room.pass_started + self.tick_s - loop.time())
        if delay <= 0:
            room.flush_at = loop.call_soon(self._flush, room)
        else:
            room.flush_at = loop.call_later(delay, self._flush, room)

    def _flush(self, room: Room) -> None:
        """One step of a pass; the next step runs after the loop has read its sockets."""
        room.flush_at = None
        loop = asyncio.get_running_loop()
        if not room.passing:
            room.passing, room.pass_upto, room.pass_started = True, room.last_seen, loop.time()
        self._write_step(room)
        self._trim(room)
        if self.rooms.get(room.stream_id) is not room:
            return  # everyone left during the step
        if room.lineup and room.lineup[0].upto < room.pass_upto:
            room.flush_at = loop.call_soon(self._flush, room)
            return
        room.passing = False
        owed = room.last_seen - room.lineup[0].upto if room.lineup else 0
        if owed > 1:
            # Events come faster than passes end: rest a tick, so that frames get
            # fuller instead of the server writing without a pause. For one event,
            # resting would only delay it.
            next_start = room.pass_started + BUSY_PERIOD_TICKS * self.tick_s
            self._schedule_pass(room, rest=min(self.tick_s, next_start - loop.time()))
        elif owed:
            self._schedule_pass(room)

    def _write_step(self, room: Room) -> None:
        """Write the batches furthest behind, up to STEP_WRITES connections."""
        lineup, last_seen = room.lineup, room.last_seen
        frames: dict[tuple[Encoding, int], tuple[bytes, int]] = {}
        written = delivered = 0
        while written < STEP_WRITES and lineup and lineup[0].upto < room.pass_upto:
            batch = lineup.popleft()
            key = (batch.encoding, batch.upto)
            if key not in frames:
                events = _events_after(room.recent, batch.upto)
                payload = events_payload(room.stream_id, events, batch.encoding)
                frames[key] = websocket_frame(payload, batch.encoding), len(events)
            frame, count = frames[key]
            # A write can close a connection, which then leaves the batch.
            for member in list(batch.members):
                member.send(frame)
            written += len(batch.members)
            delivered += len(batch.members) * count
            batch.upto = last_seen
            if batch.members:
                self._place(room, batch)
        if written:
            metrics.FRAMES.inc(written)
            metrics.EVENTS_DELIVERED.inc(delivered)
        if written and room.observed < last_seen:
            metrics.observe_delivery(_events_after(room.recent, room.observed), time.time() * 1000)
            room.observed = last_seen

    @staticmethod
    def _place(room: Room, batch: Batch) -> None:
        """Put `batch` in the lineup by `upto`, into a batch like it when there is room."""
        lineup = room.lineup
        at = len(lineup)
        while at and lineup[at - 1].upto > batch.upto:
            at -= 1
        same = at
        while same and lineup[same - 1].upto == batch.upto and len(batch.members) < STEP_WRITES:
            same -= 1
            other = lineup[same]
            if other.encoding is batch.encoding and (
                len(other.members) + len(batch.members) <= STEP_WRITES
            ):
                other.members.update(batch.members)
                for member in batch.members:
                    room.batch_of[member] = other
                return
        lineup.insert(at, batch)

    @staticmethod
    def _trim(room: Room) -> None:
        owed_from = room.lineup[0].upto if room.lineup else room.last_seen
        recent = room.recent
        while len(recent) > RECENT_EVENTS and event_id_of(recent[0]) <= owed_from:
            recent.popleft()

    def local_viewers(self, stream_id: str) -> int:
        room = self.rooms.get(stream_id)
        return room.local_count() if room else 0


def _events_after(recent: deque[bytes], event_id: int) -> list[bytes]:
    newer: list[bytes] = []
    for raw in reversed(recent):
        if event_id_of(raw) <= event_id:
            break
        newer.append(raw)
    newer.reverse()
    return newer
