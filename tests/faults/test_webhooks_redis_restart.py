"""kill -9 Redis while messages wait for a webhook endpoint that fails, restart it
from its append-only file: the server's deliverer carries on by itself, and every
event reaches the endpoint once it answers, in order, none lost."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from gifting_server.auth import Role
from tests.factories import auth
from tests.faults import buy, go_live, send_gift
from tests.faults.conftest import Serve
from tests.topology import RedisUnderFault
from tests.webhook_receiver import receiving

WEBHOOKS = {
    "allow_private": True,
    "poll_ms": 20,
    "retry_base_ms": 20,
    "retry_max_ms": 100,
    "timeout_s": 1.0,
    "lease_ms": 1500,
}


async def gifts(http: httpx.AsyncClient, prefix: str, count: int) -> list[int]:
    sent = []
    for i in range(count):
        response = await send_gift(http, "carol", f"{prefix}-{i}")
        assert response.status_code == 200, response.text
        sent.append(response.json()["event_id"])
    return sent


async def test_messages_waiting_for_an_endpoint_survive_a_redis_restart(
    own_redis: RedisUnderFault, serve: Serve
) -> None:
    server = serve(own_redis.url, webhooks=WEBHOOKS)
    async with receiving() as receiver, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await go_live(http)
        await buy(http, "carol", "coins_1000")
        body: dict[str, Any] = {"url": receiver.url, "kinds": ["gift"], "stream_id": "s1"}
        response = await http.post(
            "/v1/webhooks", json=body, headers=auth("streamer1", Role.STREAMER)
        )
        assert response.status_code == 201, response.text
        receiver.secrets.append(response.json()["secret"])
        sent = await gifts(http, "a", 3)
        await receiver.wait_for(3)
        receiver.always_fail = True
        sent += await gifts(http, "b", 3)
        await receiver.wait_for_attempts(len(receiver.deliveries) + 1)  # one failed
        await asyncio.to_thread(own_redis.kill)
        await asyncio.to_thread(own_redis.restart)
        receiver.always_fail = False
        await receiver.wait_for(6, timeout=30)
        sent += await gifts(http, "c", 3)
        events = await receiver.wait_for(9, timeout=30)
        assert [e["event_id"] for e in events] == sent
        assert all(d.signed_with == receiver.secrets[0] for d in receiver.deliveries)
