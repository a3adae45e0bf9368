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
import signal
from collections.abc import AsyncIterator
from typing import Any, Protocol

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from gifting_server.local_cluster import LocalCluster
from gifting_server.redis_topology import Topology, detect, detect_async
from tests.redis_process import RedisProcess

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
        [(_, count)] = await client.pubsub_shardnumsub(channel, target_nodes=node)
        counts.append(int(count))
    return counts


class Subscription:
    """A channel followed as the workers follow a stream's events: SUBSCRIBE on the
    single Redis, SSUBSCRIBE on the master of the channel's slot on a cluster (where
    the scripts SPUBLISH). `open` returns once Redis confirmed the subscription."""

    def __init__(self, client: AsyncClient) -> None:
        self.sharded = isinstance(client, AsyncRedisCluster)
        self.pubsub: Any = client.pubsub()

    @classmethod
    async def open(cls, client: AsyncClient, channel: str) -> Subscription:
        subscription = cls(client)
        if subscription.sharded:
            await subscription.pubsub.ssubscribe(channel)
        else:
            await subscription.pubsub.subscribe(channel)
        confirmed = await subscription._read(timeout_s=2.0, skip_confirmations=False)
        kind = "ssubscribe" if subscription.sharded else "subscribe"
        assert (confirmed or {}).get("type") == kind, confirmed
        return subscription

    async def _read(self, timeout_s: float, skip_confirmations: bool) -> dict[str, Any] | None:
        if self.sharded:
            message = await self.pubsub.get_sharded_message(
                ignore_subscribe_messages=skip_confirmations, timeout=timeout_s
            )
        else:
            message = await self.pubsub.get_message(
                ignore_subscribe_messages=skip_confirmations, timeout=timeout_s
            )
        return dict(message) if message is not None else None

    async def next(self, timeout_s: float = 1.0) -> dict[str, Any] | None:
        """The next published message, or None after `timeout_s`."""
        return await self._read(timeout_s, skip_confirmations=True)

    async def aclose(self) -> None:
        await self.pubsub.aclose()


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


async def scripts_cached(client: AsyncClient, digests: list[str]) -> list[bool]:
    """Whether Redis holds each script in its script cache: on a cluster, whether any
    master does (a script is loaded on the master where it ran)."""
    if not isinstance(client, AsyncRedisCluster):
        return [bool(held) for held in await client.script_exists(*digests)]
    held = [False] * len(digests)
    for node in client.get_primaries():
        found = await client.execute_command("SCRIPT EXISTS", *digests, target_nodes=node)
        held = [a or bool(b) for a, b in zip(held, found, strict=True)]
    return held


async def error_count(client: AsyncClient, error: str) -> int:
    """How often Redis answered `error` (INFO errorstats), summed over every master."""
    if isinstance(client, AsyncRedisCluster):
        replies = await client.info("errorstats", target_nodes=AsyncRedisCluster.PRIMARIES)
        stats = list(replies.values())
    else:
        stats = [await client.info("errorstats")]
    return sum(int(s.get(f"errorstat_{error}", {}).get("count", 0)) for s in stats)


async def config_set_everywhere(client: AsyncClient, name: str, value: Any) -> None:
    """CONFIG SET on the single Redis, or on every master of the cluster."""
    if isinstance(client, AsyncRedisCluster):
        await client.config_set(name, value, target_nodes=AsyncRedisCluster.PRIMARIES)
    else:
        await client.config_set(name, value)


class RedisUnderFault(Protocol):
    """The whole Redis of a fault test, whatever its topology: killed with SIGKILL and
    started again from its append-only files, or hung with SIGSTOP and continued."""

    @property
    def url(self) -> str: ...

    def kill(self) -> None: ...

    def restart(self) -> None: ...

    def suspend(self) -> None: ...

    def resume(self) -> None: ...


class SingleUnderFault:
    """One redis-server of the test's own."""

    def __init__(self, process: RedisProcess) -> None:
        self.process = process

    @property
    def url(self) -> str:
        return self.process.url

    def kill(self) -> None:
        self.process.kill()

    def restart(self) -> None:
        self.process.start()  # from its append-only file, on the same port

    def suspend(self) -> None:
        self.process.suspend()

    def resume(self) -> None:
        self.process.resume()


class ClusterUnderFault:
    """Every node of the session's cluster at once, so that no replica takes over: the
    cluster is gone (or hung) as a whole, as the single Redis is, and comes back from
    its nodes.conf and append-only files on the same ports, masters as they were.
    A master lost alone, with a replica promoted in its place, is `ClusterFaults`."""

    def __init__(self, cluster: LocalCluster) -> None:
        self.cluster = cluster

    @property
    def url(self) -> str:
        return self.cluster.urls[0]

    def kill(self) -> None:
        for process in self.cluster.processes.values():
            process.send_signal(signal.SIGKILL)
        for process in self.cluster.processes.values():
            process.wait()

    def restart(self) -> None:
        self.cluster.start()  # the saved layout: every node again, then wait until ok

    def _signal_all(self, signum: int) -> None:
        for process in self.cluster.processes.values():
            if process.poll() is None:
                process.send_signal(signum)

    def suspend(self) -> None:
        self._signal_all(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal_all(signal.SIGCONT)
        self.cluster.wait_ready()
