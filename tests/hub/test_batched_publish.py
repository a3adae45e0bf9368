"""The events of one send_gifts call to one stream are published as one message, one
event a line (ledger/lua/include/event.lua): the broker splits it into its events, in
order, and a message of one event (every other script, a worker of an older version
during an upgrade) is still one event."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY
from redis.asyncio import RedisCluster

from gifting_server.events import published
from gifting_server.hub.cluster_broker import ClusterBroker
from gifting_server.hub.pubsub_broker import PubSubBroker
from gifting_server.hub.redis_broker import RedisBroker
from gifting_server.ledger import gifts, keys, streams
from gifting_server.ledger.store import Store, connect_cluster, connect_single
from tests.factories import fund, live_stream, token, viewer
from tests.hub.conftest import StartServer
from tests.hub.wsclient import MSGPACK, WsClient
from tests.ledger.conftest import one_script_only

GIFTS = 12


class Heard:
    """What the broker hands the hub, and a wait for the `n`-th event."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []
        self.changed = asyncio.Event()

    def on_event(self, stream_id: str, raw: bytes) -> None:
        self.events.append((stream_id, raw))
        self.changed.set()

    def on_resubscribed(self, stream_id: str) -> None:
        pass

    async def until(self, n: int) -> list[tuple[str, bytes]]:
        async with asyncio.timeout(5):
            while len(self.events) < n:
                self.changed.clear()
                await self.changed.wait()
        return self.events


@pytest.fixture
async def broker(store: Store, redis_url: str) -> AsyncIterator[tuple[PubSubBroker, Heard]]:
    """The broker of the topology under test, as app.py makes it, on its own client."""
    heard = Heard()
    made: PubSubBroker
    if isinstance(store.redis, RedisCluster):
        cluster = await connect_cluster(redis_url, 5.0, decode_responses=False)
        made, close = ClusterBroker(cluster), cluster.aclose
    else:
        single = connect_single(redis_url, 5.0, decode_responses=False)
        made, close = RedisBroker(single), single.aclose
    made.start(heard.on_event, heard.on_resubscribed)
    yield made, heard
    await made.stop()
    await close()


def event(n: int, name: str = "Ann") -> bytes:
    # The fields a sender's display name may hold are escaped JSON: never a raw newline.
    return b'{"event_id":%d,"kind":"gift","ts":1,"sender":{"id":"a","name":"%s\\nB"}}' % (
        n,
        name.encode(),
    )


async def test_a_message_of_several_events_reaches_the_hub_as_each_event_in_order(
    store: Store, broker: tuple[PubSubBroker, Heard]
) -> None:
    made, heard = broker
    await made.subscribe("s1")
    channel = keys.stream_channel("s1")
    publish = "SPUBLISH" if isinstance(store.redis, RedisCluster) else "PUBLISH"
    await store.redis.execute_command(publish, channel, b"\n".join(event(n) for n in (1, 2, 3)))
    await store.redis.execute_command(publish, channel, event(4))  # one event, as before
    got = await heard.until(4)
    assert got == [("s1", event(n)) for n in (1, 2, 3, 4)]


async def test_a_calls_events_published_as_one_message_reach_every_viewer_in_order(
    start_server: StartServer, store: Store
) -> None:
    """GIFTS gifts sent at once from this process go as one send_gifts call, so their
    events (streak ends included) are one message; every viewer of every worker's
    encoding gets them all, once each, in order, and a lone gift after them too."""
    one_script_only(store, "send_gifts is the single Redis's call (a cluster sends each gift)")
    senders = [f"g{i}" for i in range(GIFTS)]
    for who in senders:
        await fund(store, who, "coins_100")
    await live_stream(store)
    # The owner is looked up once: a gift waiting for it would reach a later pass.
    await streams.streamer_of(store, "s1")
    rose = store.settings.gift("rose")
    assert rose is not None
    server = start_server()
    async with (
        await WsClient.open(server.url, token("ann")) as ann,
        await WsClient.open(server.url, token("bob"), encoding=MSGPACK) as bob,
    ):
        for client in (ann, bob):
            await client.subscribe("s1")
        calls = REGISTRY.get_sample_value("gifting_gift_batches_total") or 0.0
        receipts = await asyncio.gather(
            *(gifts.run_send_gift(store, viewer(w), "s1", rose, 1, f"k-{w}") for w in senders)
        )
        assert REGISTRY.get_sample_value("gifting_gift_batches_total") == calls + 1
        last = max(r.event_id for r in receipts)
        alone = await gifts.run_send_gift(store, viewer("g0"), "s1", rose, 1, "alone")
        for client in (ann, bob):
            got = await client.events_until(lambda e: e["event_id"] == alone.event_id)
            ids = [e["event_id"] for e in got]
            assert ids == list(range(ids[0], alone.event_id + 1)), ids
            assert {r.event_id for r in receipts} <= set(ids)
            senders_seen = [e["sender"]["id"] for e in got if e["event_id"] <= last]
            assert senders_seen == senders, senders_seen


async def test_with_events_per_call_message_off_each_event_is_its_own_message(
    store: Store, redis_url: str
) -> None:
    """[redis] events_per_call_message = false, for a rolling upgrade from workers that
    read one event a message: a call's events go one a message, as before; on (the
    default) the same call's events are one message."""
    one_script_only(store, "send_gifts is the single Redis's call (a cluster sends each gift)")
    for who in ("ann", "bob", "cy"):
        await fund(store, who, "coins_100")
    await live_stream(store)
    await streams.streamer_of(store, "s1")
    rose = store.settings.gift("rose")
    assert rose is not None
    off = dataclasses.replace(store.settings.redis, events_per_call_message=False)
    old_style = Store(
        connect_single(redis_url, 5.0), dataclasses.replace(store.settings, redis=off)
    )
    await streams.streamer_of(old_style, "s1")
    listener = connect_single(redis_url, 5.0, decode_responses=False)
    pubsub = listener.pubsub()
    await pubsub.subscribe(keys.stream_channel("s1"))
    try:
        assert (await pubsub.get_message(timeout=5))["type"] == "subscribe"
        messages = []
        for sending, key in ((old_style, "off"), (store, "on")):
            calls = REGISTRY.get_sample_value("gifting_gift_batches_total") or 0.0
            await asyncio.gather(
                *(
                    gifts.run_send_gift(sending, viewer(w), "s1", rose, 1, f"{key}-{w}")
                    for w in ("ann", "bob", "cy")
                )
            )
            assert REGISTRY.get_sample_value("gifting_gift_batches_total") == calls + 1
            sent = []
            while sum(len(m.split(b"\n")) for m in sent) < 3:
                message = await pubsub.get_message(timeout=5)
                assert message is not None
                sent.append(message["data"])
            messages.append(sent)
        assert [len(sent) for sent in messages] == [3, 1]
        assert [len(published(m)) for m in messages[0]] == [1, 1, 1]
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await old_style.close()
