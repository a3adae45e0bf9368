"""A worker follows a stream's channel on Redis (SUBSCRIBE on the single Redis,
SSUBSCRIBE on the master of the stream's slot on a cluster) exactly while one of its
viewers watches the stream."""

from __future__ import annotations

from gifting_server.ledger.store import Store
from tests.factories import live_stream, token
from tests.faults import wait_until
from tests.hub.conftest import StartServer
from tests.hub.test_subscribe_races import followed_by_a_worker
from tests.hub.wsclient import WsClient


async def test_a_stream_is_followed_while_watched_and_dropped_after(
    start_server: StartServer, store: Store, redis_url: str
) -> None:
    for stream_id in ("s1", "s2"):
        await live_stream(store, stream_id, streamer=f"streamer-{stream_id}")
    server = start_server()
    assert await followed_by_a_worker(redis_url, ["s1", "s2"]) == []
    async with await WsClient.open(server.url, token("ann")) as viewer:
        await viewer.subscribe("s1")
        assert await followed_by_a_worker(redis_url, ["s1", "s2"]) == ["s1"]
        await viewer.send({"type": "unsubscribe", "stream_id": "s1"})
        await viewer.next_of("unsubscribed", stream_id="s1")

        async def dropped() -> bool:
            return await followed_by_a_worker(redis_url, ["s1", "s2"]) == []

        await wait_until(dropped, 5, "the worker to drop s1")
