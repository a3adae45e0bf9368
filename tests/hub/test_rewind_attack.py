"""A stream's history going back (a failover lost events its viewers had, and the
next events take their ids again) while the hub is busy with it: a pass under
way over many viewers, a join reading the history. Every viewer is told it was
restarted (`subscribed {recovered: false}`) and then gets the new events, once,
in order; the hub goes quiet again.

A real `Hub` on the in-memory broker and history (test_broker_gap.py plays the
quiet case)."""

from __future__ import annotations

import asyncio

from gifting_server.config import Settings
from gifting_server.hub.history import Head, Replay
from gifting_server.hub.hub import STEP_WRITES, Hub
from gifting_server.hub.memory import MemoryBroker, MemoryHistory
from gifting_server.protocol import Encoding
from tests.hub.test_broker_gap import Member

# Enough viewers that one pass takes several loop passes (STEP_WRITES a step).
VIEWERS = STEP_WRITES * 12


def lose_events_after(history: MemoryHistory, newest: int) -> None:
    """The promoted replica never received the events after `newest`."""
    history.seq["s"] = newest
    while history.events["s"] and history.events["s"][-1][0] > newest:
        history.events["s"].pop()


async def quiet(hub: Hub, newest: int) -> None:
    """Wait until the hub took every event up to `newest` and no pass is due."""
    room = hub.rooms["s"]
    for _ in range(1000):
        if room.last_seen == newest and room.flush_at is None and not room.passing:
            return
        await asyncio.sleep(0.002)
    raise AssertionError(
        f"the hub never went quiet: last_seen {room.last_seen}, passing {room.passing}, "
        f"pass_upto {room.pass_upto}, lineup at {[b.upto for b in room.lineup][:5]}"
    )


async def test_a_rewind_during_a_pass_ends_the_pass_and_sends_no_empty_frames(
    settings: Settings,
) -> None:
    history = MemoryHistory()
    broker = MemoryBroker(history)
    hub = Hub(settings, broker, history)
    hub.start()
    members = [Member(Encoding.JSON) for _ in range(VIEWERS)]
    for member in members:
        await hub.join(member, "s", None)
    broker.publish("s", {"kind": "gift", "ts": 1})
    await quiet(hub, 1)
    room = hub.rooms["s"]
    for _ in range(3):
        broker.publish("s", {"kind": "gift", "ts": 1})  # events 2..4, lost below
    for _ in range(5000):  # the pass delivering 2..4 has started, and has far to go
        if room.passing:
            break
        await asyncio.sleep(0.0002)
    assert room.passing and room.pass_upto == 4
    broker.lose_connection()
    lose_events_after(history, 1)
    broker.reconnect()  # the hub reads the history (a few loop passes) mid-pass
    await quiet(hub, 1)
    broker.publish("s", {"kind": "gift", "ts": 2})  # event 2 again, a new one
    await quiet(hub, 2)
    for member in members:
        assert all(m["type"] == "subscribed" or m["events"] for m in member.messages), (
            "an empty events frame"
        )
        seen = member.seen()
        restart = seen.index(("subscribed", (False, 1)))
        assert seen[restart + 1 :] == [("event", 2)]
        assert member.messages[-1]["events"][0]["ts"] == 2
    await hub.stop()


async def test_an_event_held_from_the_lost_history_is_never_delivered_in_place_of_a_new_one(
    settings: Settings,
) -> None:
    """Pub/sub gave event 8 (7 missed) just before the master died; the promoted
    replica ends at 4. Event 8 is gone with it: a new event 8 must not be dropped
    as already seen, and the old one must never reach a viewer."""
    history = MemoryHistory()
    broker = MemoryBroker(history)
    hub = Hub(settings, broker, history)
    hub.start()
    members = [Member(Encoding.JSON), Member(Encoding.MSGPACK)]
    for member in members:
        await hub.join(member, "s", None)
    for _ in range(4):
        broker.publish("s", {"kind": "gift", "ts": 1})
    await quiet(hub, 4)
    broker.hold()
    for _ in range(4):
        broker.publish("s", {"kind": "gift", "ts": 1})  # 5..8 on the old master
    assert broker.held is not None
    del broker.held[2]  # pub/sub never gave event 7
    broker.release()  # 5 and 6 taken, 8 held for the gap, its refill under way
    lose_events_after(history, 4)  # then the master died; its replica has 1..4
    room = hub.rooms["s"]
    for ts in range(2, 5):  # the new events 5..7, on the promoted replica
        broker.publish("s", {"kind": "gift", "ts": ts})
    for _ in range(1000):
        if room.last_seen >= 7 and not room.filling:
            break
        await asyncio.sleep(0.002)
    broker.publish("s", {"kind": "gift", "ts": 5})  # the new event 8
    await quiet(hub, 8)
    for member in members:
        seen = member.seen()
        assert ("subscribed", (False, 4)) in seen, (seen, member.messages)
        restart = seen.index(("subscribed", (False, 4)))
        assert seen[restart + 1 :] == [("event", i) for i in range(5, 9)]
        events = [e for m in member.messages if m["type"] == "events" for e in m["events"]]
        assert [e["ts"] for e in events if e["event_id"] == 8] == [5]
    await hub.stop()


class HeldHistory:
    """The in-memory history, whose next replay is read at once but answered only on
    `release`: an answer from the old master still on its way when it dies."""

    def __init__(self, history: MemoryHistory) -> None:
        self.history = history
        self.hold_next = False
        self.held = asyncio.Event()
        self.released = asyncio.Event()

    async def head(self, stream_id: str) -> Head:
        return await self.history.head(stream_id)

    async def replay(self, stream_id: str, since: int) -> Replay:
        if not self.hold_next:
            return await self.history.replay(stream_id, since)
        self.hold_next = False
        answer = self.history._read(stream_id, since)
        self.held.set()
        await self.released.wait()
        return answer


async def test_a_join_whose_history_read_straddles_a_rewind_is_not_told_it_recovered(
    settings: Settings,
) -> None:
    """A viewer resubscribes with `since` = 2; the old master answers 3 and 4, but the
    answer arrives after the worker found that the failover lost them (and the new
    event 2 took an id again). The viewer must not be told it recovered 3 and 4:
    they are gone, and the new events 3 and 4 would then never reach it."""
    memory = MemoryHistory()
    history = HeldHistory(memory)
    broker = MemoryBroker(memory)
    hub = Hub(settings, broker, history)
    hub.start()
    watcher = Member(Encoding.JSON)
    await hub.join(watcher, "s", None)
    for _ in range(4):
        broker.publish("s", {"kind": "gift", "ts": 1})
    await quiet(hub, 4)

    joiner = Member(Encoding.JSON)
    history.hold_next = True
    joining = asyncio.ensure_future(hub.join(joiner, "s", 2))
    await history.held.wait()  # it read 3 and 4, the old master's
    broker.lose_connection()
    lose_events_after(memory, 1)
    broker.publish("s", {"kind": "gift", "ts": 2})  # the new event 2
    broker.reconnect()
    await quiet(hub, 2)
    history.released.set()
    await joining
    for ts in (3, 4, 5):  # the new events 3, 4 and 5
        broker.publish("s", {"kind": "gift", "ts": ts})
    await quiet(hub, 5)

    for member in (watcher, joiner):
        events = [e for m in member.messages if m["type"] == "events" for e in m["events"]]
        new = [(e["event_id"], e["ts"]) for e in events if e["ts"] > 1]
        assert new[-3:] == [(3, 3), (4, 4), (5, 5)], member.seen()
    subscribed = joiner.messages[0]
    assert subscribed["type"] == "subscribed"
    if subscribed["recovered"]:  # then it was given nothing that is gone
        events = [e for m in joiner.messages if m["type"] == "events" for e in m["events"]]
        assert all(e["ts"] > 1 for e in events), joiner.seen()
    await hub.stop()
