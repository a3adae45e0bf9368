"""Which Redis the shared fixtures run on, and the few calls whose shape depends on it.

`GIFTING_TEST_TOPOLOGY=cluster` (or `pytest --redis-topology=cluster`) runs the
money-path, hub and fault suites on the session's local Redis Cluster (3 masters,
3 replicas) instead of the single test Redis: `redis_url` is then a node of the
cluster with every master flushed, and the servers and stores under test detect the
cluster by themselves. A test that talks to Redis directly goes through the helpers
here, which speak to either topology: a client that follows the slot map, key
listings that read every master, and the faults (kill, restart) aimed at the node
that owns a key.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from gifting_server.local_cluster import LocalCluster
from gifting_server.redis_topology import Topology, detect, detect_async

TOPOLOGY_ENV = "GIFTING_TEST_TOPOLOGY"
SINGLE, CLUSTER = "single", "cluster"

SyncClient = redis.Redis | RedisCluster
AsyncClient = aioredis.Redis | AsyncRedisCluster


def chosen() -> str:
    """The topology of this run: `single` (the default) or `cluster`."""
    value = os.environ.get(TOPOLOGY_ENV, SINGLE).strip().lower() or SINGLE
    if value not in (SINGLE, CLUSTER):
        raise pytest.UsageError(f"{TOPOLOGY_ENV} must be {SINGLE!r} or {CLUSTER!r}, not {value!r}")
    return value


def on_cluster() -> bool:
    return chosen() == CLUSTER


def single_only(reason: str) -> pytest.MarkDecorator:
    """Skip on the cluster a test that is about the single Redis itself."""
    return pytest.mark.skipif(on_cluster(), reason=f"single Redis only: {reason}")


def is_cluster(url: str) -> bool:
    return detect(url, 2.0) is Topology.CLUSTER


def sync_client(url: str, **options: Any) -> SyncClient:
    """A blocking client of the Redis at `url`, following the slot map on a cluster."""
    if is_cluster(url):
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


async def async_client(url: str, **options: Any) -> AsyncClient:
    """An asyncio client of the Redis at `url`, following the slot map on a cluster."""
    if await detect_async(url, 2.0) is Topology.CLUSTER:
        cluster = AsyncRedisCluster.from_url(url, **options)
        await cluster.initialize()
        return cluster
    return aioredis.Redis.from_url(url, **options)


async def all_keys(client: AsyncClient, pattern: str = "*") -> list[Any]:
    """KEYS over every master (a cluster client asks one node for KEYS by default)."""
    if isinstance(client, AsyncRedisCluster):
        found = await client.keys(pattern, target_nodes=AsyncRedisCluster.PRIMARIES)
        return list(found)
    return list(await client.keys(pattern))


async def scan_all(client: AsyncClient, pattern: str = "*") -> AsyncIterator[Any]:
    """SCAN over every master (redis-py's cluster `scan_iter` already does)."""
    async for key in client.scan_iter(match=pattern, count=1000):
        yield key


async def channel_subscribers(client: AsyncClient, channels: list[str]) -> list[int]:
    """How many connections follow each channel: PUBSUB NUMSUB on the single Redis,
    PUBSUB SHARDNUMSUB on the master of each channel's slot on a cluster (where the
    workers follow streams with SSUBSCRIBE)."""
    if not isinstance(client, AsyncRedisCluster):
        return [int(count) for _, count in await client.pubsub_numsub(*channels)]
    counts = []
    for channel in channels:
        node = client.get_node_from_key(channel)
        reply = await client.execute_command("PUBSUB SHARDNUMSUB", channel, target_nodes=node)
        counts.append(int(reply[1]))
    return counts


def flush_all(url: str) -> None:
    """FLUSHALL on the single Redis, or on every master of the cluster."""
    client = sync_client(url)
    try:
        client.flushall()
    finally:
        client.close()


class ClusterFaults:
    """Faults aimed at the node that owns a key: kill -9 its master and wait until a
    replica serves its slots, then bring the old master back (as a replica)."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    def kill_owner(self, key: str) -> int:
        """Kills the master of `key`'s slot and waits for the failover; the port of
        the promoted replica."""
        master = self.cluster.master_for_key(key)
        self.cluster.kill(master)
        return self.cluster.wait_for_failover(master).port

    def heal(self) -> None:
        """Every node running again and the cluster ok."""
        for node in self.cluster.nodes():
            if node.port not in self.cluster.running():
                self.cluster.restart(node)
        self.cluster.wait_ready()
