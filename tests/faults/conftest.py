"""Fixtures of the fault tests: a Redis of the test's own (so killing it leaves the
session's Redis alone), in-process servers over any Redis, and a decoding client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from tests import topology
from tests.conftest import ServerThread, server_factory
from tests.redis_process import RedisProcess
from tests.topology import AsyncClient, RedisUnderFault

REQUEST_TIMEOUT_S = 0.5
# A request must answer within the Redis timeout plus this much, whatever Redis does.
SLACK_S = 1.0

# Limits that only the tests about limits meet, a combo window long enough that no
# streak ends by itself, and a short Redis timeout so that outages show at once.
FAULT_DEFAULTS: dict[str, dict[str, Any]] = {
    "limits": {
        "gift_rate_per_s": 10_000,
        "gift_burst": 10_000,
        "combo_window_ms": 600_000,
        "request_timeout_s": REQUEST_TIMEOUT_S,
    },
    "websocket": {"rate_per_s": 10_000, "burst": 10_000},
}

Serve = Callable[..., ServerThread]


@pytest.fixture
def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisUnderFault]:
    """A Redis to kill at will (AOF, appendfsync always): a redis-server of this test
    alone, or on the cluster the session's cluster, flushed, healed afterwards."""
    if topology.on_cluster():
        request.getfixturevalue("cluster_url")  # every node up, every master flushed
        cluster = topology.ClusterUnderFault(request.getfixturevalue("redis_cluster"))
        yield cluster
        cluster.resume()
        if not cluster.cluster.running():
            cluster.restart()
        return
    server = RedisProcess(tmp_path / "own-redis")
    server.start()
    yield topology.SingleUnderFault(server)
    server.resume()  # a stopped process ignores SIGTERM until it is continued
    server.stop()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Serve]:
    """`serve(redis_url, limits={...}, ...)` → a running in-process server, with the
    sections merged over FAULT_DEFAULTS."""
    with server_factory(tmp_path, FAULT_DEFAULTS) as start:
        yield start


@pytest.fixture
async def own_client(own_redis: RedisUnderFault) -> AsyncIterator[AsyncClient]:
    """A client of the test's own Redis that rides out its restarts."""
    client = await topology.async_client(
        own_redis.url,
        decode_responses=True,
        socket_timeout=5,
        retry=Retry(ExponentialBackoff(cap=0.5), retries=5),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )
    yield client
    await client.aclose()


@pytest.fixture
async def shared_client(redis_url: str) -> AsyncIterator[AsyncClient]:
    """A client of the session's Redis (flushed for this test)."""
    client = await topology.async_client(redis_url, decode_responses=True)
    yield client
    await client.aclose()
