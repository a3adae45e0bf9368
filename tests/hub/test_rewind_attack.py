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
