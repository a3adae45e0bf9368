"""The cluster broker and the cluster client when the whole cluster is lost at once:
the broker keeps trying while no node answers and follows every stream again once
the cluster is back; a hung cluster costs each call one timeout, not one per node;
and following and leaving streams on other nodes never looks like a lost node."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator

import pytest
from redis import exceptions as redis_errors

from gifting_server.hub.cluster_broker import ClusterBroker
from gifting_server.ledger import keys
from gifting_server.ledger.store import connect_cluster
from gifting_server.local_cluster import LocalCluster
from tests.cluster.test_cluster_hub import one_stream_per_master
from tests.faults import wait_until
from tests.topology import ClusterUnderFault

pytestmark = pytest.mark.cluster

TIMEOUT_S = 0.5


class Followed:
    """What the broker hands on: each stream's events, and the streams followed again."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bytes]] = []
        self.resubscribed: set[str] = set()

    def on_event(self, stream_id: str, data: bytes) -> None:
        self.events.append((stream_id, data))

    def on_resubscribed(self, stream_id: str) -> None:
        self.resubscribed.add(stream_id)


@pytest.fixture
async def broker(cluster_url: str) -> AsyncIterator[tuple[ClusterBroker, Followed]]:
    client = await connect_cluster(cluster_url, TIMEOUT_S, decode_responses=False)
    broker, followed = ClusterBroker(client), Followed()
    broker.start(followed.on_event, followed.on_resubscribed)
    yield broker, followed
    await broker.stop()
    await client.aclose()


@pytest.fixture
def whole_cluster(redis_cluster: LocalCluster) -> Iterator[ClusterUnderFault]:
    whole = ClusterUnderFault(redis_cluster)
    yield whole
    if sorted(redis_cluster.running()) != sorted(redis_cluster.ports):
        whole.kill()  # whatever still runs, so that every node starts again
        whole.restart()
    else:
        whole.resume()


async def publish(cluster_url: str, stream_id: str, data: bytes) -> None:
    client = await connect_cluster(cluster_url, 5.0)
    try:
        await client.spublish(keys.stream_channel(stream_id), data)
    finally:
        await client.aclose()


async def test_after_the_whole_cluster_restarts_the_broker_follows_every_stream_again(
    redis_cluster: LocalCluster,
    cluster_url: str,
    broker: tuple[ClusterBroker, Followed],
    whole_cluster: ClusterUnderFault,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster_broker, followed = broker
    stream_ids = one_stream_per_master(redis_cluster)
    for stream_id in stream_ids:
        await cluster_broker.subscribe(stream_id)

    whole_cluster.kill()
    # While no node answers, the broker fails to subscribe again, and tries again.
    await wait_until(
        lambda: caplog.text.count("subscribing again failed") >= 3, 10, "three failed attempts"
    )
    assert cluster_broker.task is not None and not cluster_broker.task.done()

    await asyncio.to_thread(whole_cluster.restart)
    await wait_until(lambda: followed.resubscribed == set(stream_ids), 15, "every stream again")
    for stream_id in stream_ids:
        await publish(cluster_url, stream_id, b"after")
    expected = {(stream_id, b"after") for stream_id in stream_ids}
    await wait_until(lambda: expected <= set(followed.events), 5, "an event of every stream")


async def test_a_hung_cluster_costs_each_call_one_timeout_not_one_per_node(
    cluster_url: str, whole_cluster: ClusterUnderFault
) -> None:
    client = await connect_cluster(cluster_url, TIMEOUT_S)
    try:
        whole_cluster.suspend()
        # The first call times out and leaves the slot map to be read again...
        with pytest.raises(redis_errors.TimeoutError):
            await client.hgetall(keys.wallet("alice"))

        # ...which every call after it waits for: one reading, shared, bounded.
        async def timed_call(user: str) -> float:
            started = time.monotonic()
            with pytest.raises((redis_errors.ConnectionError, redis_errors.TimeoutError)):
                await client.hgetall(keys.wallet(user))
            return time.monotonic() - started

        seconds = await asyncio.gather(*(timed_call(f"user{i}") for i in range(20)))
        assert max(seconds) < 2 * TIMEOUT_S + 0.5, sorted(seconds)
    finally:
        whole_cluster.resume()
        await client.aclose()


async def test_following_and_leaving_streams_on_other_nodes_loses_nothing(
    redis_cluster: LocalCluster,
    cluster_url: str,
    broker: tuple[ClusterBroker, Followed],
    caplog: pytest.LogCaptureFixture,
) -> None:
    cluster_broker, followed = broker
    kept, *others = one_stream_per_master(redis_cluster)
    await cluster_broker.subscribe(kept)
    caplog.set_level(logging.WARNING, logger="gifting_server.broker")
    # Each other node's pubsub is made and connected by a subscribe, and closed by the
    # last unsubscribe, while the reader reads every node.
    for _ in range(30):
        for stream_id in others:
            await cluster_broker.subscribe(stream_id)
        for stream_id in others:
            await cluster_broker.unsubscribe(stream_id)
    for stream_id in others:
        await cluster_broker.subscribe(stream_id)
    for stream_id in others:  # and followed again at once, for good
        await cluster_broker.unsubscribe(stream_id)
        await cluster_broker.subscribe(stream_id)
    for stream_id in (kept, *others):
        await publish(cluster_url, stream_id, b"still")
    expected = {(stream_id, b"still") for stream_id in (kept, *others)}
    await wait_until(lambda: expected <= set(followed.events), 5, "an event of every stream")
    assert "sharded pub/sub lost" not in caplog.text
    assert not followed.resubscribed
