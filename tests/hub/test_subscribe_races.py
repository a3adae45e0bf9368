"""Subscribes racing with gifts, with the client's own later frames, and with its
disconnect. The server reaches Redis through a proxy that holds the answer to the
hub's history read, so each race happens every time: the test does what must
happen meanwhile, then lets the read go on."""

from __future__ import annotations

import httpx

from gifting_server.ledger import keys
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, token
from tests.faults import wait_until
from tests.hub.conftest import StartServer
from tests.hub.redis_proxy import RedisProxy, reads_history
from tests.hub.wsclient import Message, WsClient
from tests.topology import async_client, channel_subscribers


async def subscriptions_gauge(base_url: str) -> float:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("gifting_ws_subscriptions "):
            return float(line.split()[1])
    raise AssertionError("no gifting_ws_subscriptions in /metrics")


def event_ids(messages: list[Message]) -> list[int]:
    return [e["event_id"] for m in messages if m["type"] == "events" for e in m["events"]]


async def test_a_caught_up_resubscribe_during_a_gift_is_recovered(
    start_proxied_server: StartServer, redis_proxy: RedisProxy, store: Store
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    server = start_proxied_server()
    async with (
        await WsClient.open(server.url, token("carol")) as sender,
        await WsClient.open(server.url, token("bob")) as witness,
        await WsClient.open(server.url, token("ann")) as viewer,
    ):
        await witness.subscribe("s1")
        newest = (await sender.gift("s1", id="seen"))["event_id"]
        await witness.events_until(lambda e: e["event_id"] == newest)

        gate = redis_proxy.hold_reply(reads_history("s1"))
        await viewer.send({"type": "subscribe", "stream_id": "s1", "since": newest})
        await gate.wait_held()  # Redis answered the history read: nothing after `newest`
        between = await sender.gift("s1", id="between")
        await witness.events_until(lambda e: e["event_id"] == between["event_id"])
        gate.release()

        subscribed = await viewer.next_of("subscribed", stream_id="s1")
        assert subscribed["recovered"] is True, subscribed
        events = await viewer.events_until(lambda e: e["event_id"] == between["event_id"])
        assert [e["event_id"] for e in events] == list(range(newest + 1, between["event_id"] + 1))


async def test_a_second_subscribe_before_the_first_is_answered_delivers_each_event_once(
    start_proxied_server: StartServer, redis_proxy: RedisProxy, store: Store
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    server = start_proxied_server()
    async with (
        await WsClient.open(server.url, token("carol")) as sender,
        await WsClient.open(server.url, token("bob")) as witness,
    ):
        await witness.subscribe("s1")
        since = (await sender.gift("s1", id="first"))["event_id"]
        await sender.gift("s1", id="second")
        before = await subscriptions_gauge(server.url)

        async with await WsClient.open(server.url, token("ann")) as viewer:
            gate = redis_proxy.hold_reply(reads_history("s1"))
            await viewer.send({"type": "subscribe", "stream_id": "s1", "since": since})
            await gate.wait_held()
            await viewer.send({"type": "subscribe", "stream_id": "s1", "since": since})
            await viewer.barrier()  # the server has taken the second subscribe
            gate.release()

            # Each subscribe is answered in turn, the second starting afresh.
            for _ in range(2):
                await viewer.next_of("subscribed", stream_id="s1")
            acks = [await sender.gift("s1", id=f"after-{i}") for i in range(5)]
            last = acks[-1]["event_id"]
            await witness.events_until(lambda e: e["event_id"] == last)
            await viewer.events_until(lambda e: e["event_id"] == last)
            await viewer.barrier()
            answers = [i for i, m in enumerate(viewer.received) if m["type"] == "subscribed"]
            assert len(answers) == 2
            for start, end in ((answers[0], answers[1]), (answers[1], len(viewer.received))):
                ids = event_ids(viewer.received[start + 1 : end])
                assert ids == list(range(since + 1, ids[-1] + 1)), ids  # each once, in order
            assert last in ids

        await wait_until(
            lambda: _gauge_is(server.url, before), 5, "the subscription gauge to come back"
        )


async def _gauge_is(base_url: str, value: float) -> bool:
    return await subscriptions_gauge(base_url) == value


async def test_an_unsubscribe_while_the_subscribe_is_pending_takes_effect_after_it(
    start_proxied_server: StartServer, redis_proxy: RedisProxy, store: Store
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    await live_stream(store, "s2", streamer="streamer2")
    server = start_proxied_server(websocket={"max_subscriptions": 1})
    async with (
        await WsClient.open(server.url, token("carol")) as sender,
        await WsClient.open(server.url, token("bob")) as witness,
        await WsClient.open(server.url, token("ann")) as viewer,
    ):
        await witness.subscribe("s1")
        since = (await sender.gift("s1", id="first"))["event_id"]

        gate = redis_proxy.hold_reply(reads_history("s1"))
        await viewer.send({"type": "subscribe", "stream_id": "s1", "since": since})
        await gate.wait_held()
        await viewer.send({"type": "unsubscribe", "stream_id": "s1"})
        await viewer.barrier()  # the server has taken the unsubscribe
        gate.release()
        await viewer.next_of("unsubscribed", stream_id="s1")
        kinds = [m["type"] for m in viewer.received if m.get("stream_id") == "s1"]
        assert kinds[0] == "subscribed" and kinds[-1] == "unsubscribed", kinds  # in order

        # The subscribe that the unsubscribe overtook holds no place: s2 fits the limit.
        await viewer.send({"type": "subscribe", "stream_id": "s2"})
        await viewer.barrier()
        assert not [m for m in viewer.unread if m["type"] == "error"], viewer.unread
        await viewer.next_of("subscribed", stream_id="s2")

        later = await sender.gift("s1", id="later")
        await witness.events_until(lambda e: e["event_id"] == later["event_id"])
        await viewer.barrier()
        kinds = [m["type"] for m in viewer.received if m.get("stream_id") == "s1"]
        assert kinds[-1] == "unsubscribed", kinds  # nothing after it


async def followed_by_a_worker(redis_url: str, stream_ids: list[str]) -> list[str]:
    """Which of the streams some worker is still subscribed to on pub/sub."""
    redis = await async_client(redis_url)
    try:
        counts = await channel_subscribers(redis, [keys.stream_channel(s) for s in stream_ids])
    finally:
        await redis.aclose()
    return [s for s, count in zip(stream_ids, counts, strict=True) if count]


async def test_a_viewer_gone_during_its_catch_up_leaves_no_stream_behind(
    start_proxied_server: StartServer, redis_proxy: RedisProxy, redis_url: str
) -> None:
    """The join is cancelled while its history read is under way (redis-py lets
    some such reads finish all the same): the stream is dropped either way."""
    server = start_proxied_server()
    viewer = await WsClient.open(server.url, token("ann"))
    gate = redis_proxy.hold_reply(reads_history("s1"))
    await viewer.send({"type": "subscribe", "stream_id": "s1", "since": 0})
    await gate.wait_held()
    await viewer.close()  # returns once the server answered the close
    gate.release()

    async def none_followed() -> bool:
        return not await followed_by_a_worker(redis_url, ["s1"])

    await wait_until(none_followed, 5, "the worker to drop the stream nobody watches")


async def test_a_subscribe_whose_history_read_fails_leaves_no_stream_behind(
    start_proxied_server: StartServer, redis_proxy: RedisProxy, redis_url: str
) -> None:
    server = start_proxied_server()
    async with await WsClient.open(server.url, token("ann")) as viewer:
        gates = [redis_proxy.hold_reply(reads_history("s1")) for _ in range(2)]
        await viewer.send({"type": "subscribe", "stream_id": "s1", "since": 0})
        for gate in gates:  # the read, then its one retry on a new connection
            await gate.wait_held()
            assert redis_proxy.cut(reads_history("s1")) == 1
        error = await viewer.next_of("error")
        assert error["code"] == "service_unavailable"

        async def none_followed() -> bool:
            return not await followed_by_a_worker(redis_url, ["s1"])

        await wait_until(none_followed, 5, "the worker to drop the stream nobody watches")
