"""The one Redis demoted to a replica (REPLICAOF, a failover that left this server on
the old master): every write script is refused READONLY at its first write. A gift
(a whole batching window of them) is answered 503 service_unavailable, never a 500,
and its retry once Redis is a master again makes it once."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from redis.asyncio import Redis

from tests.faults import assert_reconciled, buy, go_live, journal, send_gift
from tests.faults.conftest import Serve
from tests.redis_process import free_port
from tests.topology import RedisUnderFault, on_cluster


async def test_gifts_to_a_redis_demoted_to_a_replica_are_refused_503_and_retried_once(
    own_redis: RedisUnderFault, own_client: Redis, serve: Serve
) -> None:
    if on_cluster():
        pytest.skip("a cluster node takes no REPLICAOF: its failover is tests/cluster's")
    server = serve(own_redis.url)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        await go_live(http)
        for user in ("alice", "carol"):
            await buy(http, user)
        # The stream's owner, read once a worker: read while Redis still takes writes.
        assert (await send_gift(http, "carol", "before")).status_code == 200
        # A master nobody serves: the replica keeps its data and refuses every write.
        await own_client.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        try:
            refused = await asyncio.gather(
                send_gift(http, "alice", "ro1"), send_gift(http, "carol", "ro2")
            )
        finally:
            await own_client.execute_command("REPLICAOF", "NO", "ONE")
        for response in refused:
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "service_unavailable"
        for user, key in (("alice", "ro1"), ("carol", "ro2")):
            retried = await send_gift(http, user, key)
            assert retried.status_code == 200, retried.text
    made = [e["key"] for e in await journal(own_client) if e["type"] == "gift"]
    assert sorted(made) == ["before", "ro1", "ro2"]
    await assert_reconciled(own_client)
