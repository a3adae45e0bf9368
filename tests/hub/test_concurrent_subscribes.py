"""Many clients subscribing at once to streams a fresh worker does not follow yet."""

from __future__ import annotations

import asyncio
import contextlib

import httpx
import orjson
from prometheus_client.parser import text_string_to_metric_families
from websockets.frames import Opcode

from gifting_server.hub.hub import STEP_WRITES
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.wsclient import RawClient, WsClient

STREAMS = 30


async def test_simultaneous_first_subscribes_to_many_streams_are_all_answered(
    start_server: StartServer, store: Store
) -> None:
    for i in range(STREAMS):
        await live_stream(store, f"s{i}", streamer=f"streamer{i}")
    server = start_server()
    clients = await asyncio.gather(
        *(WsClient.open(server.url, token(f"v{i}")) for i in range(STREAMS))
    )
    try:
        answers = await asyncio.gather(
            *(client.subscribe(f"s{i}") for i, client in enumerate(clients))
        )
        assert [a["stream_id"] for a in answers] == [f"s{i}" for i in range(STREAMS)]
    finally:
        await asyncio.gather(*(client.close() for client in clients))


async def subscriptions_gauge(url: str) -> float:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "gifting_ws_subscriptions":
                return sample.value
    return 0.0


async def test_a_subscribe_sent_twice_at_once_counts_and_delivers_once(
    start_server: StartServer, store: Store
) -> None:
    """Two subscribes to one stream in one write (a client's effect run twice, say):
    the second joined while the first was still on its way, so the connection sat in
    two batches once its batch was full (every event twice, and still events after
    `unsubscribed`), and the subscriptions gauge stayed one too high for good."""
    await fund(store, "carol")
    await live_stream(store, "s1")
    server = start_server()
    async with contextlib.AsyncExitStack() as stack:
        sender = await stack.enter_async_context(await WsClient.open(server.url, token("carol")))
        others = [
            await stack.enter_async_context(await WsClient.open(server.url, token(f"v{i}")))
            for i in range(STEP_WRITES - 1)
        ]
        for other in others:
            await other.subscribe("s1")
        before = await subscriptions_gauge(server.url)
        twice = await RawClient(server.port, token("ann")).open()
        stack.callback(twice.shutdown)
        subscribe = orjson.dumps({"type": "subscribe", "stream_id": "s1"})
        await twice.send_frames((Opcode.TEXT, subscribe, True), (Opcode.TEXT, subscribe, True))
        seen: list[int] = []  # event ids, as often as they came

        async def read_until(kind: str, times: int = 1) -> None:
            while times:
                message = await twice.next_message()
                seen.extend(e["event_id"] for e in message.get("events", ()))
                times -= message["type"] == kind

        await read_until("subscribed", times=2)
        assert await subscriptions_gauge(server.url) == before + 1
        last = 0
        for _ in range(2):
            last = (await sender.gift("s1"))["event_id"]
            await others[0].events_until(lambda e, n=last: e["event_id"] == n)
        while last not in seen:
            await read_until("events")
        await twice.send({"type": "unsubscribe", "stream_id": "s1"})
        await read_until("unsubscribed")
        assert sorted(seen) == sorted(set(seen)), f"events delivered twice: {seen}"
        assert await subscriptions_gauge(server.url) == before


async def test_the_only_viewer_subscribing_twice_at_once_still_gets_events(
    start_server: StartServer, store: Store
) -> None:
    await fund(store, "carol")
    await live_stream(store, "s1")
    server = start_server()
    async with await WsClient.open(server.url, token("carol")) as sender:
        twice = await RawClient(server.port, token("ann")).open()
        try:
            subscribe = orjson.dumps({"type": "subscribe", "stream_id": "s1"})
            await twice.send_frames((Opcode.TEXT, subscribe, True), (Opcode.TEXT, subscribe, True))
            answers = [await twice.next_message() for _ in range(2)]
            assert [m["type"] for m in answers] == ["subscribed"] * 2
            sent = await sender.gift("s1")
            while True:
                message = await twice.next_message()
                ids = [e["event_id"] for e in message.get("events", ())]
                if sent["event_id"] in ids:
                    break
        finally:
            twice.shutdown()


async def test_an_unsubscribe_right_after_its_subscribe_leaves_the_stream(
    start_server: StartServer, store: Store
) -> None:
    """A subscribe and its unsubscribe in one write (a client switching streams fast):
    the unsubscribe arrived while the join was on its way, answered `unsubscribed`,
    and the join then went through: `subscribed` and every event after it."""
    await fund(store, "carol")
    await live_stream(store, "s1")
    server = start_server()
    async with (
        await WsClient.open(server.url, token("carol")) as sender,
        await WsClient.open(server.url, token("bob")) as witness,
    ):
        await witness.subscribe("s1")  # the worker follows s1: a join takes no round trip
        client = await RawClient(server.port, token("ann")).open()
        try:
            subscribe = orjson.dumps({"type": "subscribe", "stream_id": "s1"})
            leave = orjson.dumps({"type": "unsubscribe", "stream_id": "s1"})
            await client.send_frames((Opcode.TEXT, subscribe, True), (Opcode.TEXT, leave, True))
            kinds = []
            while "unsubscribed" not in kinds:
                kinds.append((await client.next_message())["type"])
            sent = await sender.gift("s1")
            await witness.events_until(lambda e: e["event_id"] == sent["event_id"])
            await client.send({"type": "ping"})  # everything sent before it comes first
            while kinds[-1] != "pong":
                message = await client.next_message()
                kinds.append(message["type"])
                ids = [e["event_id"] for e in message.get("events", ())]
                assert sent["event_id"] not in ids, f"events after unsubscribed: {kinds}"
            assert kinds.index("unsubscribed") > max(
                (i for i, k in enumerate(kinds) if k == "subscribed"), default=-1
            ), kinds
        finally:
            client.shutdown()
