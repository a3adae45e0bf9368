"""The whole cluster killed or hung at once (the fault suite's Redis on a cluster run):
it comes back on the same ports with every write it acknowledged, each master still
serving its slots, no replica promoted."""

from __future__ import annotations

import pytest
import redis
from redis.cluster import RedisCluster

from gifting_server.local_cluster import LocalCluster
from tests.topology import ClusterUnderFault

pytestmark = pytest.mark.cluster

KEYS = ["{u:carol}:wallet", "{u:alice}:wallet", "{u:dave}:wallet"]  # one per master


def masters(cluster: LocalCluster) -> set[tuple[int, tuple[tuple[int, int], ...]]]:
    return {(n.port, tuple(n.slots)) for n in cluster.nodes() if n.role == "master"}


def write_each(url: str, value: int) -> None:
    client = RedisCluster.from_url(url, decode_responses=True)
    try:
        for key in KEYS:
            client.hset(key, "coins", value)
    finally:
        client.close()


def read_each(cluster: LocalCluster) -> list[str | None]:
    """Each key as its master holds it."""
    values = []
    for key in KEYS:
        master = cluster.master_for_key(key)
        with redis.Redis(host=master.host, port=master.port, decode_responses=True) as client:
            values.append(client.hget(key, "coins"))
    return values


def test_a_killed_cluster_restarts_from_its_files_with_every_write(
    redis_cluster: LocalCluster, cluster_url: str
) -> None:
    before = masters(redis_cluster)
    write_each(cluster_url, 7)
    whole = ClusterUnderFault(redis_cluster)
    whole.kill()
    assert not redis_cluster.running()
    with redis.Redis.from_url(cluster_url) as client, pytest.raises(redis.ConnectionError):
        client.ping()
    whole.restart()
    assert sorted(redis_cluster.running()) == sorted(redis_cluster.ports)
    assert read_each(redis_cluster) == ["7", "7", "7"]
    assert masters(redis_cluster) == before


def test_a_hung_cluster_continued_goes_on_without_a_failover(
    redis_cluster: LocalCluster, cluster_url: str
) -> None:
    before = masters(redis_cluster)
    whole = ClusterUnderFault(redis_cluster)
    whole.suspend()
    try:
        client = redis.Redis.from_url(cluster_url, socket_timeout=0.5)
        with client, pytest.raises(redis.TimeoutError):
            client.ping()
    finally:
        whole.resume()
    write_each(cluster_url, 8)
    assert read_each(redis_cluster) == ["8", "8", "8"]
    assert masters(redis_cluster) == before
