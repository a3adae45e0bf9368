"""Storms of subscribe, unsubscribe and subscribe-with-`since` frames over many
streams, sent without waiting, from JSON and msgpack clients, while gifts flow.
A client author's checks: each frame about a stream is answered in the order sent;
between one `subscribed` of a stream and the next frame about it, events come once
and in order, starting right after `since` (recovered) or `last_event_id`; nothing
follows an `unsubscribed`; and once everyone left, the worker follows no stream."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from gifting_server.ledger import keys
from gifting_server.ledger.store import Store
from tests.conftest import ServerThread
from tests.factories import fund, live_stream, token
from tests.faults import wait_until
from tests.hub.conftest import StartServer
from tests.hub.redis_proxy import RedisProxy, subscribes
from tests.hub.wsclient import JSON, MSGPACK, Message, WsClient
from tests.topology import async_client, channel_subscribers

STREAMS = [f"s{i}" for i in range(6)]
CLIENTS = 8
FRAMES = 40


def check_stream(received: list[Message], stream_id: str, sent: list[Message]) -> None:
    """The client's messages about `stream_id` against the frames it sent about it."""
    answers = [m for m in received if m.get("stream_id") == stream_id and m["type"] != "events"]
    expected = ["subscribed" if f["type"] == "subscribe" else "unsubscribed" for f in sent]
    assert [m["type"] for m in answers] == expected, (stream_id, answers, sent)
    frame = -1
    next_id: int | None = None
    for message in received:
        if message.get("stream_id") != stream_id:
            continue
        if message["type"] == "subscribed":
            frame += 1
            since = sent[frame].get("since")
            if message["recovered"]:
                next_id = (since if since is not None else message["last_event_id"]) + 1
            else:
                next_id = message["last_event_id"] + 1
        elif message["type"] == "unsubscribed":
            frame += 1
            next_id = None
        else:
            assert next_id is not None, (stream_id, "events after unsubscribed", message)
            for event in message["events"]:
                assert event["event_id"] == next_id, (stream_id, next_id, event, sent)
                next_id += 1


async def test_subscribe_storms_over_many_streams_deliver_each_event_once_in_order(
    start_server: StartServer, store: Store, redis_url: str
) -> None:
    await storm(start_server(), store, redis_url)


async def test_subscribe_storms_while_pub_sub_is_cut_deliver_each_event_once_in_order(
    start_proxied_server: StartServer, redis_proxy: RedisProxy, store: Store, redis_url: str
) -> None:
    """The worker's pub/sub connection is cut in every round: joins race with the
    refill from the history and with the resubscription."""

    async def cut() -> None:  # once the worker's pub/sub connection is back
        await wait_until(lambda: redis_proxy.cut(subscribes), 10, "a pub/sub connection")

    await storm(start_proxied_server(), store, redis_url, cut)


async def storm(
    server: ServerThread,
    store: Store,
    redis_url: str,
    cut: Callable[[], Awaitable[None]] | None = None,
) -> None:
    await fund(store, "carol", "coins_100", times=20)
    for i, stream_id in enumerate(STREAMS):
        await live_stream(store, stream_id, streamer=f"streamer{i}")
    rng = random.Random(7)
    stop = asyncio.Event()

    async def gifts(sender: WsClient) -> None:
        n = 0
        while not stop.is_set():
            await sender.gift(rng.choice(STREAMS), id=f"storm-{n}")
            n += 1

    sender = await WsClient.open(server.url, token("carol"))
    clients = [
        await WsClient.open(server.url, token(f"v{i}"), encoding=(JSON, MSGPACK)[i % 2])
        for i in range(CLIENTS)
    ]
    flowing = asyncio.create_task(gifts(sender))
    try:
        sent: list[dict[str, list[Message]]] = [{s: [] for s in STREAMS} for _ in clients]
        for _round in range(3):
            for client, frames in zip(clients, sent, strict=True):
                for _ in range(FRAMES):
                    stream_id = rng.choice(STREAMS)
                    frame: dict[str, Any] = {"type": rng.choice(["subscribe", "unsubscribe"])}
                    frame["stream_id"] = stream_id
                    if frame["type"] == "subscribe" and rng.random() < 0.6:
                        seen = [
                            e["event_id"]
                            for m in client.received
                            if m["type"] == "events" and m["stream_id"] == stream_id
                            for e in m["events"]
                        ]
                        frame["since"] = rng.choice([0, max(seen, default=0), 10**9])
                    frames[stream_id].append(frame)
                    await client.send(frame)
            await asyncio.gather(*(client.barrier(timeout=20) for client in clients))
            await client.next_of("subscribed", timeout=20)  # the worker follows a stream
            if cut is not None:
                await cut()
        for client, frames in zip(clients, sent, strict=True):
            for stream_id in STREAMS:  # everyone leaves every stream
                frames[stream_id].append({"type": "unsubscribe", "stream_id": stream_id})
                await client.send({"type": "unsubscribe", "stream_id": stream_id})

        def all_answered() -> bool:
            return all(
                sum(
                    m["type"] in ("subscribed", "unsubscribed") and m["stream_id"] == stream_id
                    for m in client.received
                )
                >= len(frames[stream_id])
                for client, frames in zip(clients, sent, strict=True)
                for stream_id in STREAMS
            )

        await wait_until(all_answered, 30, "every subscribe and unsubscribe to be answered")
        stop.set()
        await flowing
        for client in clients:
            await client.barrier()
        for client, frames in zip(clients, sent, strict=True):
            client.assert_no_traceback()
            assert not [m for m in client.received if m["type"] == "error"]
            for stream_id in STREAMS:
                check_stream(client.received, stream_id, frames[stream_id])
    finally:
        stop.set()
        flowing.cancel()
        for client in (sender, *clients):
            await client.close()

    async def none_followed() -> bool:
        redis = await async_client(redis_url)
        try:
            counts = await channel_subscribers(redis, [keys.stream_channel(s) for s in STREAMS])
        finally:
            await redis.aclose()
        return not any(counts)

    await wait_until(none_followed, 5, "the worker to drop every stream nobody watches")
