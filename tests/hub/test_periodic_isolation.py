"""Periodic work goes on for every stream when one stream's storage is broken: a
stream whose keys a script refuses (a history key of the wrong type, say, or a
Redis Cluster shard that is down) must not stop the streaks of the others from
ending."""

from __future__ import annotations

from gifting_server.ledger import keys
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.wsclient import WsClient
from tests.topology import async_client

BROKEN = [f"broken{i}" for i in range(12)]  # one of them is swept before s1, whatever the order


async def test_a_stream_whose_sweep_fails_does_not_stop_the_streaks_of_the_others(
    start_server: StartServer, store: Store, redis_url: str
) -> None:
    await fund(store, "carol", times=2)
    await live_stream(store)
    for i, stream_id in enumerate(BROKEN):
        await live_stream(store, stream_id, streamer=f"streamer-b{i}")
    server = start_server(limits={"combo_window_ms": 300})
    async with (
        await WsClient.open(server.url, token("carol")) as sender,
        await WsClient.open(server.url, token("ann")) as viewer,
        await WsClient.open(server.url, token("bob")) as watcher,
        await WsClient.open(server.url, token("dan")) as watcher2,
    ):
        for i, stream_id in enumerate(BROKEN):  # served: swept as long as they are watched
            await (watcher if i % 2 else watcher2).subscribe(stream_id)
        for stream_id in BROKEN:  # each with a streak this worker will sweep
            assert (await sender.gift(stream_id, id=f"g-{stream_id}"))["type"] == "ack"
        redis = await async_client(redis_url)
        try:
            for stream_id in BROKEN:  # the sweep of these is refused (WRONG_KEY_TYPE)
                history = keys.stream_history(stream_id)
                await redis.delete(history)
                await redis.set(history, "not a stream")
        finally:
            await redis.aclose()

        await viewer.subscribe("s1")
        gift = await sender.gift("s1", id="g-s1")
        ended = await viewer.events_until(
            lambda e: e["kind"] == "gift" and e["streak_end"], timeout=5
        )
        assert ended[-1]["event_id"] > gift["event_id"]
