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
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gifting_server import events, metrics
from gifting_server.config import Settings
from gifting_server.events import event_id_of
from gifting_server.hub.broker import Broker
from gifting_server.hub.history import History, Replay
from gifting_server.hub.stream_state import StreamState
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
    # Taken events with their ids, oldest first: at least RECENT_EVENTS, and all
    # that anyone is owed.
    recent: deque[tuple[int, bytes]] = field(default_factory=deque)
    flush_at: asyncio.TimerHandle | asyncio.Handle | None = None
    passing: bool = False
    pass_upto: int = 0  # the pass under way writes the batches behind this
    pass_started: float = float("-inf")
    observed: int = 0  # newest event whose delivery latency is recorded
    filling: bool = False
    fill_again: bool = False  # pub/sub dropped again while filling: read once more after
    held: list[tuple[int, bytes]] = field(default_factory=list)
    viewers: int = 0  # across all workers: the newest `viewers` event taken
    state: StreamState = field(default_factory=StreamState)  # as of `last_seen`
    rewinds: int = 0  # times the stream's history went back (`Hub._rewind`)

    def local_count(self) -> int:
        return len(self.batch_of)


class Hub:
    def __init__(self, settings: Settings, broker: Broker, history: History) -> None:
        self.settings = settings
        self.tick_s = settings.websocket.tick_ms / 1000
        self.history = history
        self.broker = broker
        self.rooms: dict[str, Room] = {}
        self.joining: dict[str, int] = {}  # stream → joins under way (they keep its room)
        self._changing: dict[str, asyncio.Future[None]] = {}  # stream → its room opening/closing
        self.tasks: set[asyncio.Task[None]] = set()
        self.connections: set[Any] = set()  # every open connection, for the heartbeat
        # event kind → what hears each event of that kind taken for a stream (e.g. the
        # overlay tokens' rotation, which closes connections): `listen`
        self.listeners: dict[str, Callable[[str, bytes], None]] = {}

    def start(self) -> None:
        self.broker.start(self._on_event, self._on_resubscribed)

    def listen(self, kind: str, listener: Callable[[str, bytes], None]) -> None:
        """Call `listener(stream_id, raw)` for every event of `kind` this worker takes
        (streams with a local connection only), outside the fan-out: it may close
        connections."""
        self.listeners[kind] = listener

    async def stop(self) -> None:
        await self.broker.stop()

    # -- joining and leaving -------------------------------------------------

    async def join(self, member: Member, stream_id: str, since: int | None) -> None:
        """Send `subscribed`, then every event after `since` in order, then live ones.

        A member already in the stream starts afresh. Cancelled (or its member
        closed) before `subscribed` went out, it sends nothing. However it ends, it
        leaves no room behind that nobody is in or joining."""
        self.joining[stream_id] = self.joining.get(stream_id, 0) + 1
        try:
            self._remove(member, stream_id)  # a resubscribe, e.g. with `since`
            room = await self._room(stream_id)
            rewinds = room.rewinds
            recovered, catch_up, upto = await self._catch_up(room, since)
            if room.rewinds != rewinds:
                # The history went back while it was read: what was read may be gone,
                # its ids taken by new events this member would then never get.
                recovered, catch_up, upto = False, [], room.last_seen
            if not recovered:
                # Live events after `last_event_id` only: the events this worker took
                # while the history was read are older than where the client starts.
                upto = max(upto, room.last_seen)
            if _cancel_requested():
                # redis-py can let a read finish although its task was cancelled
                # (its connection closed): such a join must still never answer.
                raise asyncio.CancelledError
            if member.closed:
                return
            subscribed = _subscribed(room, recovered, max(upto, room.last_seen))
            member.send(websocket_frame(encode(subscribed, member.encoding), member.encoding))
            for start in range(0, len(catch_up), REPLAY_FRAME_EVENTS):
                chunk = catch_up[start : start + REPLAY_FRAME_EVENTS]
                member.send(
                    websocket_frame(
                        events_payload(stream_id, chunk, member.encoding), member.encoding
                    )
                )
            joined = room.batch_of[member] = Batch(member.encoding, upto, {member: None})
            self._place(room, joined)
            metrics.SUBSCRIPTIONS.inc()
        finally:
            self.joining[stream_id] -= 1
            if not self.joining[stream_id]:
                del self.joining[stream_id]
            if (room_now := self.rooms.get(stream_id)) is not None:
                self._drop_if_empty(room_now)

    async def _catch_up(self, room: Room, since: int | None) -> tuple[bool, list[bytes], int]:
        if since is None:
            return True, [], room.last_seen
        replay = await self.history.replay(room.stream_id, since)
        if not replay.recovered:
            return False, [], replay.last_event_id
        events, upto = list(replay.events), replay.last_event_id
        for _ in range(3):
            newer = _entries_after(room.recent, upto)
            if not newer or newer[0][0] == upto + 1:
                events += [raw for _, raw in newer]
                return True, events, newer[-1][0] if newer else upto
            more = await self.history.replay(room.stream_id, upto)  # flushed past our read
            if not more.recovered:
                return False, [], more.last_event_id
            events += more.events
            upto = more.last_event_id
        return True, events, upto

    def leave(self, member: Member, stream_id: str) -> bool:
        room = self._remove(member, stream_id)
        if room is None:
            return False
        self._drop_if_empty(room)
        return True

    def _remove(self, member: Member, stream_id: str) -> Room | None:
        room = self.rooms.get(stream_id)
        if room is None or (batch := room.batch_of.pop(member, None)) is None:
            return None
        del batch.members[member]  # an emptied batch leaves the lineup when its turn comes
        metrics.SUBSCRIPTIONS.dec()
        return room

    # A stream's room is opened (pub/sub subscription, then the room) and closed
    # (the room, then the unsubscription) one change at a time: a join that finds
    # a change under way waits for it, so that no room is left without its
    # subscription by an unsubscription that finishes after it.

    async def _room(self, stream_id: str) -> Room:
        while True:
            room = self.rooms.get(stream_id)
            if room is not None:
                return room
            change = self._changing.get(stream_id)
            if change is None:
                return await self._open(stream_id)
            # Raises what made another joiner's opening fail: answered with an
            # error frame. An opening cut short, or a closing, ends with None.
            await asyncio.shield(change)

    async def _open(self, stream_id: str) -> Room:
        change = self._changing[stream_id] = asyncio.get_running_loop().create_future()
        try:
            await self.broker.subscribe(stream_id)
            head = await self.history.head(stream_id)
        except BaseException as e:
            try:
                await self.broker.unsubscribe(stream_id)
            finally:
                del self._changing[stream_id]
                if isinstance(e, Exception):
                    change.set_exception(e)
                    change.exception()  # read here, so asyncio does not log it as lost
                else:
                    change.set_result(None)  # our own cancellation: others try again
            raise
        room = self.rooms[stream_id] = Room(
            stream_id, last_seen=head.last_event_id, viewers=head.viewers, state=head.state
        )
        del self._changing[stream_id]
        change.set_result(None)
        return room

    def _drop_if_empty(self, room: Room) -> None:
        stream_id = room.stream_id
        if self.rooms.get(stream_id) is not room or room.local_count() or stream_id in self.joining:
            return
        del self.rooms[stream_id]
        if room.flush_at:
            room.flush_at.cancel()
        change = self._changing[stream_id] = asyncio.get_running_loop().create_future()

        async def close() -> None:
            try:
                await self.broker.unsubscribe(stream_id)
            finally:
                del self._changing[stream_id]
                change.set_result(None)

        self._spawn(close())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)  # a task nobody refers to may be collected before it ends
        task.add_done_callback(self.tasks.discard)

    # -- events from the broker -----------------------------------------------

    def _on_event(self, stream_id: str, raw: bytes) -> None:
        room = self.rooms.get(stream_id)
        if room is None:
            return
        event_id = event_id_of(raw)
        if room.filling:
            room.held.append((event_id, raw))
            return
        if event_id <= room.last_seen:
            return  # already taken (a replay after a reconnect overlaps)
        if event_id > room.last_seen + 1:
            log.warning(
                "stream %s: events %d..%d missing from pub/sub; fetching them from history",
                stream_id,
                room.last_seen + 1,
                event_id - 1,
            )
            room.held.append((event_id, raw))
            self._fill_gap(room)
            return
        self._accept(room, event_id, raw)

    def _on_resubscribed(self, stream_id: str) -> None:
        room = self.rooms.get(stream_id)
        if room is None:
            return
        if room.filling:
            # What was published while pub/sub was down again may be newer than the
            # history read under way: read again once it is done.
            room.fill_again = True
        else:
            self._fill_gap(room)

    def _fill_gap(self, room: Room) -> None:
        room.filling = True

        async def fill() -> None:
            # Until the history answers, newer events wait in `held`: stepping over
            # the gap would let viewers miss events without knowing it.
            delay = 0.1
            while self.rooms.get(room.stream_id) is room:
                # The read starts one event early: that event as stored must be the one
                # taken, or the history went back (a failover) and new events reused
                # the ids since, which a read from `last_seen` could not tell.
                taken = room.recent[-1] if room.recent else None
                overlap = taken is not None and taken[0] == room.last_seen
                held_before = len(room.held)
                try:
                    since = room.last_seen - 1 if overlap else room.last_seen
                    replay = await self.history.replay(room.stream_id, since)
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
            # pub/sub gives an event after the history has it: one held before this read
            # began and newer than all it read is from a history that is gone.
            room.held = [
                entry
                for at, entry in enumerate(room.held)
                if at >= held_before or entry[0] <= replay.last_event_id
            ]
            if overlap and replay.recovered:
                assert taken is not None
                if replay.events[:1] == [taken[1]]:
                    replay = Replay(True, replay.events[1:], replay.last_event_id)
                else:  # the event taken last is gone, or another took its id
                    replay = Replay(False, [], min(replay.last_event_id, room.last_seen - 1))
            if replay.recovered:
                for raw in replay.events:
                    self._take(room, event_id_of(raw), raw)
            elif replay.last_event_id < room.last_seen:
                await self._rewind(room, replay.last_event_id)
            else:
                self._restart_after_gap(room, replay.last_event_id)
            room.filling = False
            if room.fill_again:
                room.fill_again = False
                self._fill_gap(room)  # the events held wait for that read
                return
            held, room.held = room.held, []
            for at, (event_id, raw) in enumerate(held):
                if event_id > room.last_seen + 1:
                    # Missing from pub/sub after this read (another drop): fill again.
                    room.held = held[at:]
                    self._fill_gap(room)
                    return
                self._take(room, event_id, raw)

        self._spawn(fill())

    async def _rewind(self, room: Room, newest: int) -> None:
        """The stream's history ends before events this worker delivered: its shard
        failed over to a replica that had not received them (replication is
        asynchronous), so they no longer exist and the stream's next events take their
        ids again. The history is compared with what was delivered to find where they
        part; every viewer gets a fresh `subscribed` with recovered: false there, then
        the history's events after it (the new ones with reused ids), then live ones."""
        kept = {event_id: raw for event_id, raw in room.recent}
        oldest = min(kept, default=newest + 1)
        parted, again = newest, []
        with contextlib.suppress(Exception):  # unreadable: restart at `newest`
            replay = await self.history.replay(room.stream_id, oldest - 1)
            if replay.recovered:
                again = replay.events
                while again and kept.get(event_id_of(again[0])) == again[0]:
                    again.pop(0)
                parted = event_id_of(again[0]) - 1 if again else newest
        log.warning(
            "stream %s: events %d..%d are gone from Redis (a failover?); viewers start "
            "again at %d",
            room.stream_id, parted + 1, room.last_seen, parted,
        )  # fmt: skip
        room.rewinds += 1
        while room.recent and room.recent[-1][0] > parted:
            room.recent.pop()
        room.held = [(event_id, raw) for event_id, raw in room.held if event_id > parted]
        room.observed = min(room.observed, parted)
        # A pass under way must end at what is left, or it would write its batches
        # (with no event for them) until the stream's new events reach its old end.
        room.pass_upto = min(room.pass_upto, parted)
        for batch in room.lineup:
            batch.upto = min(batch.upto, parted)
        room.last_seen = parted
        self._restart_after_gap(room, parted)
        for raw in again:
            self._take(room, event_id_of(raw), raw)

    def _restart_after_gap(self, room: Room, newest: int) -> None:
        """The history no longer holds what pub/sub missed: every viewer of the room
        gets what it is owed up to the gap, then a fresh `subscribed` with
        recovered: false, and live events after `newest` (never a silent jump)."""
        log.warning(
            "stream %s: events %d..%d are gone from the history; viewers start again at %d",
            room.stream_id, room.last_seen + 1, newest, newest,
        )  # fmt: skip
        newest = max(newest, room.last_seen)
        frames: dict[tuple[str, Encoding, int], bytes] = {}
        batches = [batch for batch in room.lineup if batch.members]
        room.lineup.clear()
        for batch in batches:
            owed = _events_after(room.recent, batch.upto)
            # A joiner may have read the history past `newest`: it goes on from there.
            start = max(batch.upto, newest)
            owed_key, subscribed_key = (
                ("events", batch.encoding, batch.upto),
                ("subscribed", batch.encoding, start),
            )
            if owed and owed_key not in frames:
                payload = events_payload(room.stream_id, owed, batch.encoding)
                frames[owed_key] = websocket_frame(payload, batch.encoding)
            if subscribed_key not in frames:
                subscribed = _subscribed(room, False, start)
                payload = encode(subscribed, batch.encoding)
                frames[subscribed_key] = websocket_frame(payload, batch.encoding)
            for member in list(batch.members):
                if owed:
                    member.send(frames[owed_key])
                member.send(frames[subscribed_key])
            batch.upto = start
        room.last_seen = newest
        for batch in batches:
            if batch.members:  # a write can close a connection, which then leaves its batch
                self._place(room, batch)

    def _take(self, room: Room, event_id: int, raw: bytes) -> None:
        if event_id > room.last_seen:
            self._accept(room, event_id, raw)

    def _accept(self, room: Room, event_id: int, raw: bytes) -> None:
        room.last_seen = event_id
        room.recent.append((event_id, raw))
        kind = events.envelope_of(raw).kind
        if kind == "viewers":
            # `subscribed` tells a newcomer the count its later `viewers` events
            # correct, so that what each viewer shows converges to what is published.
            room.viewers = int(events.parse(raw).get("count", room.viewers))
        else:
            room.state.take(kind, raw)
            if (listener := self.listeners.get(kind)) is not None:
                asyncio.get_running_loop().call_soon(listener, room.stream_id, raw)
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
        while len(recent) > RECENT_EVENTS and recent[0][0] <= owed_from:
            recent.popleft()

    def served(self) -> Mapping[str, int]:
        """Every stream this worker serves (viewers in it or joining) → its local
        viewers, now: a live view, not a copy."""
        return Served(self.rooms)


class Served(Mapping[str, int]):
    def __init__(self, rooms: dict[str, Room]) -> None:
        self.rooms = rooms

    def __getitem__(self, stream_id: str) -> int:
        return self.rooms[stream_id].local_count()

    def __iter__(self) -> Iterator[str]:
        return iter(self.rooms)

    def __len__(self) -> int:
        return len(self.rooms)


def _subscribed(room: Room, recovered: bool, last_event_id: int) -> dict[str, Any]:
    """The `subscribed` message: where the subscriber starts, and the stream's state
    there (its viewers, whether the alerts are paused, its goal); the events after
    `last_event_id` change it from there."""
    return {
        "type": "subscribed",
        "stream_id": room.stream_id,
        "recovered": recovered,
        "viewers": room.viewers,
        "last_event_id": last_event_id,
        **room.state.subscribed_fields(),
    }


def _cancel_requested() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _entries_after(recent: deque[tuple[int, bytes]], event_id: int) -> list[tuple[int, bytes]]:
    newer: list[tuple[int, bytes]] = []
    for entry in reversed(recent):
        if entry[0] <= event_id:
            break
        newer.append(entry)
    newer.reverse()
    return newer


def _events_after(recent: deque[tuple[int, bytes]], event_id: int) -> list[bytes]:
    return [raw for _, raw in _entries_after(recent, event_id)]
