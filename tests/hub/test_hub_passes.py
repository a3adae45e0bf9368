"""The fan-out's passes under churn: events arriving during a pass, viewers joining
(some with `since` ahead of what pub/sub delivered yet), leaving, closing inside a
write, and joins cut short. Every viewer gets exactly the events after the point
it joined, once each and in order, and the rest once it stays.

A real `Hub` on the in-memory broker and history; members stand in for
connections. The real-socket behaviour is in test_fanout.py, test_recovery.py and
test_slow_consumer.py."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import msgpack
import orjson
import pytest

from gifting_server.config import Settings
from gifting_server.hub import hub as hub_module
from gifting_server.hub.hub import Hub
from gifting_server.hub.memory import MemoryBroker, MemoryHistory
from gifting_server.protocol import Encoding

SEEDS = 40


def payload_of(frame: bytes) -> bytes:
    size, head = frame[1] & 0x7F, 2
    if size == 126:
        size, head = int.from_bytes(frame[2:4], "big"), 4
    elif size == 127:
        size, head = int.from_bytes(frame[2:10], "big"), 10
    return frame[head : head + size]


class Viewer:
    """Decodes what the hub sends it; may close itself after a few frames."""

    def __init__(self, hub: Hub, encoding: Encoding, dies_after: int | None) -> None:
        self.hub, self.encoding = hub, encoding
        self.start: int | None = None  # the event it has when `subscribed` comes
        self.got: list[int] = []
        self.frames = 0
        self.dies_after = dies_after
        self.is_closed = False
        self.left = False

    @property
    def closed(self) -> bool:
        return self.is_closed

    def send(self, frame: bytes) -> None:
        assert not self.left, "a frame after the viewer left"
        if self.is_closed:
            return  # a closed connection drops what is still written to it
        payload = payload_of(frame)
        message: dict[str, Any] = (
            orjson.loads(payload) if self.encoding is Encoding.JSON else msgpack.unpackb(payload)
        )
        if message["type"] == "subscribed":
            assert self.start is None and not self.got, "a second subscribed"
            assert message["recovered"] is True
            self.start = message["last_event_id"]
        else:
            assert message["type"] == "events" and message["events"]
            assert self.start is not None, "events before subscribed"
            self.got += [event["event_id"] for event in message["events"]]
        self.frames += 1
        if self.dies_after is not None and self.frames >= self.dies_after:
            self.close()

    def close(self) -> None:
        """Like a connection that closes: its session makes it leave afterwards."""
        self.is_closed = True
        self.leave()
        if not self.left:  # its join has not placed it yet
            asyncio.get_running_loop().call_soon(self.leave)

    def leave(self) -> None:
        if self.hub.leave(self, "s"):
            self.left = True


async def churn(settings: Settings, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    # Small steps make passes of many steps, during which events arrive.
    monkeypatch.setattr(hub_module, "STEP_WRITES", rng.choice([2, 8, hub_module.STEP_WRITES]))
    history = MemoryHistory()
    broker = MemoryBroker(history)
    hub = Hub(settings, broker, history)
    hub.tick_s = rng.choice([0.0, 0.001, 0.005])
    hub.start()

    def publish(count: int) -> None:
        for _ in range(count):
            broker.publish("s", {"kind": "gift", "ts": 1, "pad": "x" * rng.randint(0, 50)})

    publish(rng.randint(0, 5))
    keeper = Viewer(hub, rng.choice(list(Encoding)), None)  # keeps the room open
    await hub.join(keeper, "s", None)
    viewers = [keeper]
    joins: dict[Viewer, asyncio.Task[None]] = {}
    since_of: dict[Viewer, int | None] = {keeper: None}
    for _ in range(rng.randint(50, 300)):
        roll = rng.random()
        if roll < 0.45:
            publish(rng.randint(1, 5))
        elif roll < 0.55:
            broker.hold() if broker.held is None else broker.release()
        elif roll < 0.75:
            # Joins with nothing, or with everything the history has: when pub/sub
            # is slow, that is ahead of what the room has taken.
            viewer = Viewer(hub, rng.choice(list(Encoding)), rng.choice([None, None, 1, 2, 4]))
            since_of[viewer] = history.seq["s"] if rng.random() < 0.5 else None
            joins[viewer] = asyncio.create_task(hub.join(viewer, "s", since_of[viewer]))
            viewers.append(viewer)
        elif roll < 0.85 and len(viewers) > 1:
            viewer = rng.choice(viewers[1:])
            task = joins[viewer]
            if not task.done() and rng.random() < 0.5:
                task.cancel()  # a later frame or a disconnect cuts the join short
            viewer.close()
        await asyncio.sleep(rng.choice([0, 0, 0, 0.001]))
    broker.release()
    await asyncio.gather(*joins.values(), return_exceptions=True)
    publish(5)  # past what any viewer joined ahead with
    # The hub signals nothing when its passes end: look until they have, or fail.
    room = hub.rooms["s"]
    newest = history.seq["s"]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while room.last_seen < newest or room.flush_at is not None or room.passing:
        assert loop.time() < deadline, "the passes never came to an end"
        await asyncio.sleep(0.002)

    for viewer in viewers:
        if viewer.start is None:
            assert viewer.is_closed and not viewer.got  # cut short before `subscribed`
            continue
        since = since_of[viewer]
        start = viewer.start if since is None else since
        assert viewer.got == list(range(start + 1, start + 1 + len(viewer.got)))
        if not viewer.is_closed:
            assert viewer.got == list(range(start + 1, newest + 1))
    behind = [batch.upto for batch in room.lineup]
    assert behind == sorted(behind)
    assert all(room.batch_of[v] is batch for batch in room.lineup for v in batch.members)
    assert sum(len(batch.members) for batch in room.lineup) == len(room.batch_of)
    assert set(room.batch_of) == {v for v in viewers if not v.is_closed}
    await hub.stop()


@pytest.mark.parametrize("seed", range(SEEDS))
async def test_every_viewer_gets_its_events_once_in_order_through_churn(
    settings: Settings, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    await churn(settings, seed, monkeypatch)
