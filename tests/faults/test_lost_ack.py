"""A connection dropped after a gift was sent but before its answer was read: the
client retries with the same id (WebSocket) or idempotency key (HTTP) and is
charged once, whether the server had applied the gift or not."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import orjson
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from tests.factories import token
from tests.faults import assert_reconciled, buy, go_live, journal, send_gift, wait_until
from tests.faults.conftest import Serve
from tests.hub.wsclient import WsClient, ws_url

ROUNDS = 10


async def gift_then_drop_ws(base_url: str, message_id: str, redis: Redis, applied: bool) -> None:
    """Send a gift on a fresh connection and cut the TCP connection without reading."""
    async with connect(ws_url(base_url, token("alice")), compression=None, proxy=None) as ws:
        frame = {"type": "gift", "id": message_id, "stream_id": "s1", "gift_id": "rose"}
        await ws.send(orjson.dumps(frame).decode())
        if applied:
            await wait_until(lambda: is_journaled(redis, message_id), 5, f"{message_id} applied")
        ws.transport.abort()


async def gift_then_drop_http(base_url: str, key: str, redis: Redis, applied: bool) -> None:
    """Write a whole gift request on a raw socket and close it without reading."""
    host, port = base_url.removeprefix("http://").split(":")
    _reader, writer = await asyncio.open_connection(host, int(port))
    body = orjson.dumps({"gift_id": "rose", "count": 1, "idempotency_key": key})
    writer.write(
        b"POST /v1/streams/s1/gifts HTTP/1.1\r\n"
        + f"Host: {host}\r\nAuthorization: Bearer {token('alice')}\r\n".encode()
        + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    if applied:
        await wait_until(lambda: is_journaled(redis, key), 5, f"{key} applied")
    writer.transport.abort()


async def is_journaled(redis: Redis, key: str) -> bool:
    return any(e.get("key") == key for e in await journal(redis))


@pytest.mark.parametrize("applied", [False, True], ids=["dropped-at-once", "dropped-after-apply"])
@pytest.mark.parametrize("transport", ["ws", "http"])
async def test_retry_after_a_lost_answer_is_charged_once(
    transport: str, applied: bool, redis_url: str, shared_client: Redis, serve: Serve
) -> None:
    server = serve(redis_url)
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        await WsClient.open(server.url, token("alice")) as sender,
    ):
        await go_live(http, "s1")
        await buy(http, "alice")
        answers: dict[str, int] = {}
        for i in range(ROUNDS):
            key = f"{transport}-{i}"
            if transport == "ws":
                await gift_then_drop_ws(server.url, key, shared_client, applied)
                ack = await sender.gift("s1", id=key)
                assert ack["type"] == "ack", ack
                answers[key] = ack["event_id"]
            else:
                await gift_then_drop_http(server.url, key, shared_client, applied)
                response = await send_gift(http, "alice", key)
                assert response.status_code == 200, response.text
                answers[key] = response.json()["event_id"]

        entries = [e for e in await journal(shared_client) if e["type"] == "gift"]
        assert Counter(e["key"] for e in entries) == Counter(answers.keys()), "one gift per key"
        assert {e["key"]: int(e["event_id"]) for e in entries} == answers  # retries answer it
        wallet = await http.get("/v1/wallet", headers={"Authorization": f"Bearer {token('alice')}"})
        assert wallet.json()["coins"] == 100 - ROUNDS
        await assert_reconciled(shared_client)
        sender.assert_no_traceback()
