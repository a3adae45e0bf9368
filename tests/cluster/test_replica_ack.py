"""`[redis] replicas_acked = 1` on the local cluster (one replica per master): a
money script in one slot is acknowledged only once its master's replica has it, so
killing the master with SIGKILL and promoting that replica loses no acknowledged write."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, streams, wallet
from gifting_server.ledger.journal import records as journal_records
from gifting_server.ledger.store import Store, connect, masters_short_of_replicas
from gifting_server.local_cluster import LocalCluster, NodeInfo
from tests.conftest import make_settings
from tests.factories import fund, live_stream, viewer

pytestmark = pytest.mark.cluster

WAIT_TIMEOUT_MS = 2000
# One user per master (tests/cluster/test_ledger_slots.py).
USERS = ("carol", "alice", "dave")


def node_client(node: NodeInfo) -> redis.Redis:
    return redis.Redis(host=node.host, port=node.port, decode_responses=True)


def replica_reader(replica: NodeInfo) -> redis.Redis:
    """A client that reads on the replica itself (READONLY), not redirected to its master."""
    client = redis.Redis(
        host=replica.host, port=replica.port, decode_responses=True, single_connection_client=True
    )
    client.execute_command("READONLY")
    return client


def replicas_in_sync(cluster: LocalCluster) -> None:
    """Until every master's replica has all its writes, asked of the master (a replica
    that has just synced gets writes only after its first ACK, up to 1 s later)."""
    for node in cluster.nodes():
        if node.role == "master" and not node.failed:
            client = node_client(node)
            try:
                assert client.wait(1, 10_000) == 1, f"the replica of {node.port} is behind"
            finally:
                client.close()


@pytest.fixture
def killed(redis_cluster: LocalCluster) -> Iterator[list[NodeInfo]]:
    """Nodes a test kills; they rejoin after it (as replicas of their successors)."""
    nodes: list[NodeInfo] = []
    yield nodes
    for node in nodes:
        if node.port not in redis_cluster.running():
            redis_cluster.restart(node)


@pytest.fixture
async def store(
    redis_cluster: LocalCluster, cluster_url: str, tmp_path: Path
) -> AsyncIterator[Store]:
    replicas_in_sync(redis_cluster)
    settings = make_settings(
        cluster_url,
        tmp_path,
        economy={"holding_period_days": 0, "cashout_min_diamonds": 2},
        redis={"replicas_acked": 1, "replicas_timeout_ms": WAIT_TIMEOUT_MS},
    )
    store = Store(await connect(cluster_url, 1.0), settings)
    yield store
    await store.close()


async def test_scripts_in_one_slot_are_acknowledged_with_the_write_on_the_replica(
    redis_cluster: LocalCluster, store: Store
) -> None:
    for streamer in USERS:
        master = redis_cluster.master_for_key(keys.wallet(streamer))
        [replica] = redis_cluster.replicas_of(master)
        on_replica = replica_reader(replica)
        try:
            await wallet.set_daily_limit(store, streamer, 500)
            assert on_replica.hget(keys.wallet(streamer), "limit") == "500"

            seeded = node_client(master)
            seeded.hset(keys.wallet(streamer), "diamonds", 100)
            seeded.close()
            paid = await wallet.cashout(store, streamer, 40, "c1")
            assert on_replica.hget(keys.wallet(streamer), "diamonds") == "60"
            [(_, entry)] = on_replica.xrange(keys.journal(streamer))
            assert (entry["type"], entry["diamonds"], paid.diamonds_left) == ("cashout", "40", 60)

            stream = f"live-{streamer}"
            assert await streams.start_stream(store, streamer, stream)
            stream_replica = replica_reader(
                redis_cluster.replicas_of(redis_cluster.master_for_key(keys.stream(stream)))[0]
            )
            assert stream_replica.exists(keys.stream(stream)) == 1
            stream_replica.close()
        finally:
            on_replica.close()


def users_on(cluster: LocalCluster, master: NodeInfo, count: int) -> list[str]:
    users = (f"user{i}" for i in range(100_000))
    on_master = (u for u in users if cluster.master_for_key(keys.wallet(u)).port == master.port)
    return [next(on_master) for _ in range(count)]


async def test_every_acknowledged_write_survives_a_killed_master_on_its_promoted_replica(
    redis_cluster: LocalCluster, store: Store, killed: list[NodeInfo]
) -> None:
    old_master = redis_cluster.master_for_key(keys.wallet("alice"))
    users = ["alice", *users_on(redis_cluster, old_master, 59)]
    seeded = node_client(old_master)
    seeded.hset(keys.wallet("alice"), "diamonds", 1000)
    seeded.config_resetstat()

    limits = await asyncio.gather(
        *(wallet.set_daily_limit(store, user, 1000 + i) for i, user in enumerate(users))
    )
    cashouts = await asyncio.gather(
        *(wallet.cashout(store, "alice", 10, f"c{i}") for i in range(20))
    )
    assert limits == [1000 + i for i in range(len(users))]
    waits = int(seeded.info("commandstats")["cmdstat_wait"]["calls"])
    seeded.close()
    assert 1 <= waits < len(users) + len(cashouts)  # the calls of one write share a WAIT
    redis_cluster.kill(old_master)  # at once: the acks are the only promise
    killed.append(old_master)

    new_master = await asyncio.to_thread(redis_cluster.wait_for_failover, old_master)
    promoted = node_client(new_master)
    try:
        for i, user in enumerate(users):
            assert promoted.hget(keys.wallet(user), "limit") == str(1000 + i), user
        assert promoted.hget(keys.wallet("alice"), "diamonds") == str(1000 - 10 * len(cashouts))
        journal = promoted.xrange(keys.journal("alice"))
        assert sorted(entry["cashout"] for _, entry in journal) == sorted(
            c.cashout_id for c in cashouts
        )
    finally:
        promoted.close()

    # The promoted master has no replica until the killed node rejoins as one: with
    # replicas_acked = 1 its writes are refused, retryable, and served once it is back.
    with pytest.raises(GiftingError) as refused:
        await wallet.set_daily_limit(store, "alice", 7)
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
    await asyncio.to_thread(redis_cluster.restart, old_master)
    await asyncio.to_thread(replicas_in_sync, redis_cluster)
    assert await wallet.set_daily_limit(store, "alice", 7) == 7
    [replica] = redis_cluster.replicas_of(new_master)
    assert replica.port == old_master.port
    on_replica = replica_reader(replica)
    assert on_replica.hget(keys.wallet("alice"), "limit") == "7"
    on_replica.close()


def user_on(cluster: LocalCluster, master: NodeInfo, prefix: str, other: bool = False) -> str:
    """A user whose wallet is on `master` (or, with `other`, on another master)."""
    for n in range(100_000):
        user = f"{prefix}{n}"
        on_master = cluster.master_for_key(keys.wallet(user)).port == master.port
        if on_master != other:
            return user
    raise AssertionError(f"no user found for node {master.port}")


async def test_acknowledged_gifts_across_slots_survive_a_killed_streamers_master(
    redis_cluster: LocalCluster, store: Store, killed: list[NodeInfo]
) -> None:
    old_master = redis_cluster.master_for_key(keys.wallet("alice"))
    streamer = user_on(redis_cluster, old_master, "tina")
    viewers = [user_on(redis_cluster, old_master, f"v{i}-", other=True) for i in range(10)]
    for user in viewers:
        await fund(store, user)
    stream = await live_stream(store, "s1", streamer)

    receipts = await asyncio.gather(
        *(
            gifts.send_gift(store, viewer(user), stream, "rose", 1, f"k{n}")
            for user in viewers
            for n in range(3)
        )
    )
    # Each step was on its master's replica when the gift was acknowledged.
    for user in viewers:
        debited = redis_cluster.master_for_key(keys.wallet(user))
        on_replica = replica_reader(redis_cluster.replicas_of(debited)[0])
        assert on_replica.hget(keys.wallet(user), "coins") == "97"
        on_replica.close()
    redis_cluster.kill(old_master)  # the streamer's side, at once
    killed.append(old_master)

    new_master = await asyncio.to_thread(redis_cluster.wait_for_failover, old_master)
    promoted = node_client(new_master)
    try:
        assert promoted.hget(keys.wallet(streamer), "received") == str(len(receipts))
        # A flush's gifts to one streamer are one entry, a gift a line (credit_streamer_batch).
        journal = promoted.xrange(keys.journal(streamer))
        entries = [record for _, e in journal for record in journal_records(e)]
        gifts_received = [entry for entry in entries if entry["type"] == "gift"]
        assert len(gifts_received) == len(receipts) == 30
    finally:
        promoted.close()


async def test_masters_short_of_the_replicas_asked_for_are_named_at_start(
    cluster_url: str, tmp_path: Path
) -> None:
    for wanted, short in ((1, 0), (2, 3)):
        settings = make_settings(cluster_url, tmp_path, redis={"replicas_acked": wanted})
        store = Store(await connect(cluster_url, 2.0), settings)
        try:
            named = await masters_short_of_replicas(store)
        finally:
            await store.close()
        assert len(named) == short, named
        assert all(name.endswith(f": 1 of {wanted}") for name in named)
