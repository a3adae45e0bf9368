from __future__ import annotations

import pytest

from gifting_server.local_cluster import LocalCluster
from gifting_server.redis_topology import Topology, detect, detect_async

pytestmark = pytest.mark.cluster


def test_a_cluster_node_is_detected_as_a_cluster(cluster_url: str) -> None:
    assert detect(cluster_url) is Topology.CLUSTER


async def test_every_node_of_the_cluster_is_detected_as_a_cluster(
    redis_cluster: LocalCluster, cluster_url: str
) -> None:
    for url in redis_cluster.urls:
        assert await detect_async(url) is Topology.CLUSTER
