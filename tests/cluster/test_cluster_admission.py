"""One stuck master refuses only the gifts that have a step on it (ledger/
gift_admission.py: an account per master). A master is paused (CLIENT PAUSE ALL:
it hangs, as in a failover or a stall, without the cluster failing it over) with a
gift of alice in flight on it (her wallet is there): every further gift of hers is
refused at once, while bob's gifts (his wallet on another master, the stream and
its streamer on a third or the same) are acknowledged all along. Once the master is
back, alice's refused keys go through, each charged once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from gifting_server.cluster_view import NodeInfo
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, wallet
from gifting_server.ledger.gifts import GiftReceipt
from gifting_server.ledger.store import Store, connect
from gifting_server.local_cluster import LocalCluster
from tests.conftest import make_settings
from tests.factories import fund, live_stream, viewer
from tests.faults import wait_until

pytestmark = pytest.mark.cluster

# The queue rule alone, at its strictest: a gift that waited past the base latency
# and 1 ms on its master, with nothing finished there since, stands in a queue.
OVERLOAD = {"queue_target_ms": 1, "min_in_flight": 0, "max_in_flight_per_user": 1000}
FAST = {"gift_rate_per_s": 100_000, "gift_burst": 100_000}
TIMEOUT_S = 10.0  # the store's Redis timeout: the stuck gift waits out the pause
PAUSE_MS = 8_000


@pytest.fixture
async def store(cluster_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    settings = make_settings(cluster_url, tmp_path, limits=FAST, overload=OVERLOAD)
    store = Store(await connect(cluster_url, TIMEOUT_S), settings)
    yield store
    await store.close()


def first_on(cluster: LocalCluster, prefix: str, on: bool, master: NodeInfo) -> str:
    """The first id `prefix<n>` whose wallet is on `master` (`on`) or off it."""
    for n in range(1000):
        user = f"{prefix}{n}"
        if (cluster.master_for_key(keys.wallet(user)).port == master.port) == on:
            return user
    raise AssertionError(f"no {prefix} id {'on' if on else 'off'} {master.port}")


@pytest.fixture
def paused(redis_cluster: LocalCluster, cluster_url: str) -> Iterator[NodeInfo]:
    """The master to pause: the one of the first stream's slot is another."""
    stream_master = redis_cluster.master_for_key(keys.stream("s1")).port
    master = next(
        n for n in redis_cluster.nodes() if n.role == "master" and n.port != stream_master
    )
    node = redis.Redis(host=master.host, port=master.port)
    yield master
    node.execute_command("CLIENT", "UNPAUSE")
    node.close()


async def refused_at_once(store: Store, user: str, key: str) -> GiftingError:
    async with asyncio.timeout(1):  # admitted, it would wait for the paused master
        with pytest.raises(GiftingError) as refused:
            await gifts.send_gift(store, viewer(user), "s1", "rose", 1, key)
    return refused.value


async def test_a_paused_master_refuses_only_the_gifts_with_a_step_on_it(
    redis_cluster: LocalCluster, store: Store, paused: NodeInfo
) -> None:
    streamer = first_on(redis_cluster, "t", False, paused)
    alice = first_on(redis_cluster, "alice", True, paused)
    bob = first_on(redis_cluster, "bob", False, paused)
    await live_stream(store, "s1", streamer)
    for user in (alice, bob):
        await fund(store, user)
        await gifts.send_gift(store, viewer(user), "s1", "rose", 1, f"{user}-warm")

    node = redis.Redis(host=paused.host, port=paused.port)
    node.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
    try:
        stuck = asyncio.ensure_future(
            gifts.send_gift(store, viewer(alice), "s1", "rose", 1, "alice-stuck")
        )
        await wait_until(
            lambda: gifts.admission_refused(store, viewer(alice), "s1") is not None,
            5,
            "alice's master to stand in a queue",
        )
        refusals = [await refused_at_once(store, alice, f"alice-{n}") for n in range(5)]
        assert all(e.code is ErrorCode.SERVICE_UNAVAILABLE for e in refusals)
        assert all(e.retry_after_ms for e in refusals)
        # Bob's gifts have no step on the paused master: acknowledged all along.
        for n in range(20):
            async with asyncio.timeout(2):
                receipt = await gifts.send_gift(store, viewer(bob), "s1", "rose", 1, f"bob-{n}")
            assert receipt.coins == 100 - 2 - n
        assert not stuck.done()
    finally:
        node.execute_command("CLIENT", "UNPAUSE")
        node.close()

    assert isinstance(await stuck, GiftReceipt)
    for n in range(5):
        receipt = await gifts.send_gift(store, viewer(alice), "s1", "rose", 1, f"alice-{n}")
        again = await gifts.send_gift(store, viewer(alice), "s1", "rose", 1, f"alice-{n}")
        assert again.event_id == receipt.event_id
    # warm, stuck, and the five refused once each: nothing the refusals wrote
    assert (await wallet.read_wallet(store, alice))["coins"] == 100 - 7
    assert (await wallet.read_wallet(store, bob))["coins"] == 100 - 21
