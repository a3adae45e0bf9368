"""Fixtures of the cluster tests: one local Redis Cluster (3 masters, 3 replicas) for
the session, flushed before each test and whole again after a test killed a node."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from gifting_server.local_cluster import LocalCluster

# Short, so that a killed master's replica takes over within a few seconds.
NODE_TIMEOUT_MS = 1000


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs the local Redis Cluster (tests/cluster)")


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"), node_timeout_ms=NODE_TIMEOUT_MS)
    with cluster:
        yield cluster


@pytest.fixture
def cluster_url(redis_cluster: LocalCluster) -> str:
    """A URL of one node of the session's cluster, every node running and every master
    flushed."""
    for node in redis_cluster.nodes():
        if node.port not in redis_cluster.running():
            redis_cluster.restart(node)
    for node in redis_cluster.nodes():
        if node.role == "master":
            client = redis.Redis(host=node.host, port=node.port)
            client.flushall()
            client.close()
    return redis_cluster.urls[0]
