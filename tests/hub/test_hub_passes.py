"""The fan-out's passes under churn: events arriving during a pass, viewers joining
(some ahead of the room), leaving, and closing inside a write. Every viewer gets
exactly the events after the point it joined, in order, and the rest once it stays.

White-box: members stand in for connections, and events enter where the broker
hands them over (`Hub._on_event`). The real-socket behaviour is in test_fanout.py,
test_recovery.py and test_slow_consumer.py."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import msgpack
import orjson
import pytest
from redis.asyncio import Redis

from gifting_server.config import Settings
from gifting_server.hub.hub import Batch, Hub, Room
from gifting_server.protocol import Encoding

SEEDS = 40


class Viewer:
    """Decodes what the hub sends it; may close itself after a few frames."""

    def __init__(self, hub: Hub, encoding: Encoding, has: int, dies_after: int | None) -> None:
        self.hub, self.encoding, self.start = hub, encoding, has
        self.got: list[int] = []
        self.frames = 0
        self.dies_after = dies_after
        self.is_closed = False

    @property
    def closed(self) -> bool:
        return self.is_closed

    def send(self, frame: bytes) -> None:
        assert not self.is_closed, "a frame after the viewer left"
        size, head = frame[1] & 0x7F, 2
        if size == 126:
            size, head = int.from_bytes(frame[2:4], "big"), 4
        payload = frame[head : head + size]
        message: dict[str, Any] = (
            orjson.loads(payload) if self.encoding is Encoding.JSON else msgpack.unpackb(payload)
        )
        assert message["type"] == "events" and message["events"]
        self.got += [event["event_id"] for event in message["events"]]
        self.frames += 1
        if self.dies_after is not None and self.frames >= self.dies_after:
            self.leave()

    def leave(self) -> None:
        if self.hub.leave(self, "s"):
            self.is_closed = True


def event(event_id: int, rng: random.Random) -> bytes:
    return orjson.dumps(
        {"event_id": event_id, "kind": "gift", "ts": 1, "pad": "x" * rng.randint(0, 50)}
    )


async def churn(settings: Settings, seed: int) -> None:
    rng = random.Random(seed)
    hub = Hub(Redis(), settings)  # never started: no broker, no Redis calls
    hub.tick_s = rng.choice([0.0, 0.001, 0.005])
    room = hub.rooms["s"] = Room("s", last_seen=rng.randint(0, 5))
    hub.joining["s"] = 1  # keeps the room while viewers come and go
    viewers: list[Viewer] = []
    next_id = room.last_seen + 1
    for _ in range(rng.randint(50, 300)):
        roll = rng.random()
        if roll < 0.45:
            for _ in range(rng.randint(1, 5)):
                hub._on_event("s", event(next_id, rng))
                next_id += 1
        elif roll < 0.65:  # joins with what it has: the room's newest, or a little more
            has = room.last_seen + (rng.randint(1, 3) if rng.random() < 0.1 else 0)
            viewer = Viewer(hub, rng.choice(list(Encoding)), has, rng.choice([None, None, 1, 3]))
            batch = room.batch_of[viewer] = Batch(viewer.encoding, has, {viewer: None})
            hub._place(room, batch)
            viewers.append(viewer)
        elif roll < 0.75 and viewers:
            rng.choice(viewers).leave()
        await asyncio.sleep(rng.choice([0, 0, 0, 0.001]))
    for _ in range(5):  # past what any viewer joined ahead with
        hub._on_event("s", event(next_id, rng))
        next_id += 1
    # The hub signals nothing when its passes end: look until they have, or fail.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while room.flush_at is not None or room.passing:
        assert loop.time() < deadline, "the passes never came to an end"
        await asyncio.sleep(0.002)

    assert room.last_seen == next_id - 1
    for viewer in viewers:
        assert viewer.got == list(range(viewer.start + 1, viewer.start + 1 + len(viewer.got)))
        if not viewer.is_closed:
            assert viewer.got == list(range(viewer.start + 1, next_id))
    behind = [batch.upto for batch in room.lineup]
    assert behind == sorted(behind)
    assert all(room.batch_of[v] is batch for batch in room.lineup for v in batch.members)
    assert sum(len(batch.members) for batch in room.lineup) == len(room.batch_of)


@pytest.mark.parametrize("seed", range(SEEDS))
async def test_every_viewer_gets_its_events_once_in_order_through_churn(
    settings: Settings, seed: int
) -> None:
    await churn(settings, seed)
