"""Byte streams at the edge of the connection's own frame reading (`_read_messages`):
whatever a read holds, each frame counts exactly as websockets' parser would count
it, and nothing a closed connection reads is acted on."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from websockets.frames import Close, Opcode

from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.wsclient import TIMEOUT_S, RawClient, WsClient


async def rate_limited_drops(base_url: str) -> float:
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as http:
        text = (await http.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith('gifting_ws_drops_total{reason="rate_limited"}'):
            return float(line.split()[1])
    return 0.0


async def test_pongs_behind_the_pong_that_closed_the_connection_are_not_read(
    start_server: StartServer,
) -> None:
    """Unsolicited pongs over the rate close the connection (4008) once. The pongs
    behind the one that closed it, in the same read, come to a closed connection:
    none of them is charged to the client or drops it again."""
    server = start_server(websocket={"rate_per_s": 1, "burst": 5, "abuse_close_after": 5})
    before = await rate_limited_drops(server.url)
    client = await RawClient(server.port, token("ann")).open()
    try:
        await client.send_frames(*[(Opcode.PONG, b"", True)] * 200)
        assert (await client.read_until_close()).code == 4008
        assert [m["code"] for m in client.messages] == ["rate_limited"] * 4
    finally:
        client.shutdown()
    assert await rate_limited_drops(server.url) == before + 1


async def closed_or_answered(client: RawClient) -> Close | None:
    """Read until the server's close frame (returned) or a `pong` message (None)."""

    async def read() -> Close | None:
        while True:
            for event in await client.read_frames():
                if event.opcode is Opcode.CLOSE:
                    return Close.parse(bytes(event.data))
                if event.opcode is Opcode.TEXT and orjson.loads(event.data)["type"] == "pong":
                    return None

    return await asyncio.wait_for(read(), TIMEOUT_S)


async def test_a_gift_behind_the_pong_that_closed_the_connection_moves_no_money(
    start_server: StartServer, store: Store
) -> None:
    """A pong over the rate that closes the connection (abuse_close_after 1), then a
    gift in the same read: the gift comes to a closed connection and is not sent,
    even though the rate (100,000 a second) has a token for it by then. Its id is
    still free: the same id with another count is acknowledged, not a conflict.
    The second pong is over the rate only if it comes within 10 µs of the first:
    an attempt where it did not is tried again."""
    await fund(store, "carol")
    await live_stream(store, "s1")
    server = start_server(websocket={"rate_per_s": 100_000, "burst": 1, "abuse_close_after": 1})
    closed = 0
    for attempt in range(5):
        gift = {"type": "gift", "id": f"behind-{attempt}", "stream_id": "s1", "gift_id": "rose"}
        client = await RawClient(server.port, token("carol")).open()
        try:
            await client.send_frames(
                (Opcode.PONG, b"", True),
                (Opcode.PONG, b"", True),
                (Opcode.TEXT, orjson.dumps(gift), True),
                (Opcode.TEXT, b'{"type": "ping"}', True),
            )
            close = await closed_or_answered(client)
        finally:
            client.shutdown()
        if close is None:
            continue  # the second pong was within the rate: nothing closed
        assert close.code == 4008
        closed += 1
        async with await WsClient.open(server.url, token("carol")) as again:
            answer = await again.gift("s1", count=2, id=gift["id"])
            assert answer["type"] == "ack", answer
    assert closed
