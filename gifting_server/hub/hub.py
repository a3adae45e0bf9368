"""The local registry and fan-out: stream → connections of this worker.

Events arrive in order from the broker, are coalesced for one short tick and
then encoded once per encoding into one WebSocket frame that is written to
every local connection of the stream without awaiting any of them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis

from gifting_server import metrics
from gifting_server.config import Settings
from gifting_server.hub.broker import RedisBroker
from gifting_server.hub.history import StreamHistory, event_id_of
from gifting_server.protocol import Encoding, encode, events_payload, websocket_frame

log = logging.getLogger("gifting_server.hub")

RECENT_EVENTS = 4096  # flushed events kept per stream to close the gap of a joining client
REPLAY_FRAME_EVENTS = 200


class Member(Protocol):
    encoding: Encoding
    skip_until: dict[str, int]  # stream → newest event id it already has

    def write_frame(self, frame: bytes, events: int) -> None: ...

    @property
    def closed(self) -> bool: ...


@dataclass
class Room:
    """This worker's view of one stream."""

    stream_id: str
    last_seen: int = 0  # newest event id taken from the broker
    members: dict[Encoding, set[Member]] = field(
        default_factory=lambda: {e: set() for e in Encoding}
    )
    pending: list[bytes] = field(default_factory=list)
    recent: deque[bytes] = field(default_factory=lambda: deque(maxlen=RECENT_EVENTS))
    flush_at: asyncio.TimerHandle | asyncio.Handle | None = None
    last_flush: float = 0.0
    joining: int = 0
    filling: bool = False
    held: list[bytes] = field(default_factory=list)
    viewers: int = 0  # across all workers, as last published

    def local_count(self) -> int:
        return sum(len(m) for m in self.members.values())


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
        room.joining += 1
        try:
            recovered, catch_up, upto = await self._catch_up(room, since)
        finally:
            room.joining -= 1
        if member.closed:
            self._drop_if_empty(room)
            return
        subscribed = {
            "type": "subscribed",
            "stream_id": stream_id,
            "recovered": recovered,
            "viewers": max(room.viewers, room.local_count() + 1),
            "last_event_id": max(upto, room.last_seen),
        }
        member.write_frame(websocket_frame(encode(subscribed, member.encoding), member.encoding), 0)
        for start in range(0, len(catch_up), REPLAY_FRAME_EVENTS):
            chunk = catch_up[start : start + REPLAY_FRAME_EVENTS]
            payload = events_payload(stream_id, chunk, member.encoding)
            member.write_frame(websocket_frame(payload, member.encoding), len(chunk))
        member.skip_until[stream_id] = max(upto, room.last_seen if since is None else upto)
        room.members[member.encoding].add(member)
        metrics.SUBSCRIPTIONS.inc()

    async def _catch_up(self, room: Room, since: int | None) -> tuple[bool, list[bytes], int]:
        if since is None:
            return True, [], room.last_seen
        replay = await self.history.replay(room.stream_id, since)
        if not replay.recovered:
            return False, [], replay.last_event_id
        events, upto = list(replay.events), replay.last_event_id
        for _ in range(3):
            newer = [e for e in room.recent if event_id_of(e) > upto]
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
        if room is None or member not in room.members[member.encoding]:
            return False
        room.members[member.encoding].discard(member)
        member.skip_until.pop(stream_id, None)
        metrics.SUBSCRIPTIONS.dec()
        self._drop_if_empty(room)
        return True

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
        room.pending.append(raw)
        if room.flush_at is None:
            loop = asyncio.get_running_loop()
            delay = room.last_flush + self.tick_s - loop.time()
            # Idle stream: flush at once (after this loop pass); busy: once per tick.
            if delay <= 0:
                room.flush_at = loop.call_soon(self._flush, room)
            else:
                room.flush_at = loop.call_later(delay, self._flush, room)

    def _flush(self, room: Room) -> None:
        room.flush_at = None
        events, room.pending = room.pending, []
        if not events:
            return
        first_id, last_id = event_id_of(events[0]), event_id_of(events[-1])
        now_ms = time.time() * 1000
        for encoding, members in room.members.items():
            if not members:
                continue
            frame = websocket_frame(events_payload(room.stream_id, events, encoding), encoding)
            for member in list(members):
                skip = member.skip_until.get(room.stream_id)
                if skip is not None and skip >= first_id:
                    self._write_newer(member, room.stream_id, events, skip)
                    if skip >= last_id:
                        continue
                    member.skip_until.pop(room.stream_id, None)
                    continue
                if skip is not None:
                    member.skip_until.pop(room.stream_id, None)
                member.write_frame(frame, len(events))
        room.recent.extend(events)
        # The next tick counts from the end of this flush: when writing to every
        # viewer takes longer than a tick, frames get fuller instead of the loop
        # never resting (and acks waiting behind back-to-back flushes).
        room.last_flush = asyncio.get_running_loop().time()
        frames = room.local_count()
        metrics.FRAMES.inc(frames)
        metrics.EVENTS_DELIVERED.inc(frames * len(events))
        metrics.observe_delivery(events, now_ms)

    @staticmethod
    def _write_newer(member: Member, stream_id: str, events: list[bytes], skip: int) -> None:
        newer = [e for e in events if event_id_of(e) > skip]
        if newer:
            payload = events_payload(stream_id, newer, member.encoding)
            member.write_frame(websocket_frame(payload, member.encoding), len(newer))

    def local_viewers(self, stream_id: str) -> int:
        room = self.rooms.get(stream_id)
        return room.local_count() if room else 0
