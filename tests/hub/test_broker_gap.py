"""A lost broker connection, played with the in-memory broker: the hub refills
what it missed from the history, and when the history no longer holds it, every
member gets a fresh `subscribed {recovered: false}` and live events after it.
(The same against real Redis, through a proxy that cuts it: test_pubsub_gap.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack
import orjson
import pytest

from gifting_server.config import Settings
from gifting_server.hub.hub import Hub
from gifting_server.hub.memory import MemoryBroker, MemoryHistory
from gifting_server.protocol import Encoding
from tests.hub.test_hub_passes import payload_of


class Member:
    def __init__(self, encoding: Encoding) -> None:
        self.encoding = encoding
        self.closed = False
        self.messages: list[dict[str, Any]] = []

    def send(self, frame: bytes) -> None:
        payload = payload_of(frame)
        decode = orjson.loads if self.encoding is Encoding.JSON else msgpack.unpackb
        self.messages.append(decode(payload))

    def seen(self) -> list[tuple[str, Any]]:
        """("subscribed", recovered, last_event_id) or ("event", event_id), in order."""
        seen: list[tuple[str, Any]] = []
        for message in self.messages:
            if message["type"] == "subscribed":
                seen.append(("subscribed", (message["recovered"], message["last_event_id"])))
            else:
                seen += [("event", event["event_id"]) for event in message["events"]]
        return seen


async def settle(hub: Hub, newest: int) -> None:
    room = hub.rooms["s"]
    for _ in range(500):
        if room.last_seen >= newest and room.flush_at is None and not room.passing:
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the hub never took every event")


async def start(settings: Settings, keep: int) -> tuple[Hub, MemoryBroker, list[Member]]:
    history = MemoryHistory(max_events=keep)
    broker = MemoryBroker(history)
    hub = Hub(settings, broker, history)
    hub.start()
    members = [Member(Encoding.JSON), Member(Encoding.MSGPACK)]
    for member in members:
        await hub.join(member, "s", None)
    for _ in range(2):
        broker.publish("s", {"kind": "gift", "ts": 1})
    await settle(hub, 2)
    return hub, broker, members


def publish_while_disconnected(broker: MemoryBroker, count: int) -> None:
    broker.lose_connection()
    for _ in range(count):
        broker.publish("s", {"kind": "gift", "ts": 1})
    broker.reconnect()


async def test_events_missed_while_disconnected_come_from_the_history(settings: Settings) -> None:
    hub, broker, members = await start(settings, keep=100)
    publish_while_disconnected(broker, 5)
    broker.publish("s", {"kind": "gift", "ts": 1})
    await settle(hub, 8)
    for member in members:
        assert member.seen() == [("subscribed", (True, 0))] + [("event", i) for i in range(1, 9)]
    await hub.stop()


async def test_a_gap_older_than_the_history_resubscribes_every_member(settings: Settings) -> None:
    hub, broker, members = await start(settings, keep=3)
    publish_while_disconnected(broker, 10)
    await settle(hub, 12)
    broker.publish("s", {"kind": "gift", "ts": 1})
    await settle(hub, 13)
    for member in members:
        assert member.seen() == [
            ("subscribed", (True, 0)),
            ("event", 1),
            ("event", 2),
            ("subscribed", (False, 12)),
            ("event", 13),
        ]
    await hub.stop()


@pytest.mark.parametrize("new_event", ["before the refill", "after it"])
async def test_events_lost_with_a_failover_restart_the_viewers_where_the_history_ends(
    settings: Settings, new_event: str
) -> None:
    """A replica promoted before it received events 2..4 (replication is
    asynchronous): the stream's next events take those ids again. Viewers are told
    (recovered: false at 1) and get the new events, never dropped as already seen."""
    hub, broker, members = await start(settings, keep=100)
    for _ in range(2):
        broker.publish("s", {"kind": "gift", "ts": 1})
    await settle(hub, 4)
    broker.lose_connection()
    history = broker.history
    history.seq["s"] = 1  # the promoted replica has event 1 only
    while history.events["s"][-1][0] > 1:
        history.events["s"].pop()
    if new_event == "before the refill":
        broker.publish("s", {"kind": "gift", "ts": 2})  # event 2 again, a new one
        broker.reconnect()
    else:
        broker.reconnect()
        for _ in range(500):
            if all(m.seen()[-1] == ("subscribed", (False, 1)) for m in members):
                break
            await asyncio.sleep(0.002)
        broker.publish("s", {"kind": "gift", "ts": 2})
    for _ in range(500):
        if all(m.seen()[-1] == ("event", 2) for m in members):
            break
        await asyncio.sleep(0.002)
    for member in members:
        assert member.seen() == [
            ("subscribed", (True, 0)), *[("event", i) for i in range(1, 5)],
            ("subscribed", (False, 1)), ("event", 2),
        ]  # fmt: skip
        assert member.messages[-1]["events"][0]["ts"] == 2
    await hub.stop()
