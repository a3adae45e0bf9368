"""Many clients subscribing at once to streams a fresh worker does not follow yet."""

from __future__ import annotations

import asyncio

from gifting_server.ledger.store import Store
from tests.factories import live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.wsclient import WsClient

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
