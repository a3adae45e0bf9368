from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPubSub, RedisCluster
from redis.crc import key_slot

from gifting_server import local_cluster
from gifting_server.cluster_view import SLOTS
from gifting_server.local_cluster import LocalCluster
from tests.conftest import CLUSTER_NODE_TIMEOUT_MS as NODE_TIMEOUT_MS

pytestmark = pytest.mark.cluster

# Hash tags that land in three different slots, one per master of a 3-master cluster.
KEYS = ["{u:carol}:wallet", "{u:alice}:wallet", "{u:dave}:wallet"]  # slots 3190, 5797, 11609


@pytest.fixture
async def client(cluster_url: str) -> AsyncIterator[RedisCluster]:
    cluster = RedisCluster.from_url(cluster_url, decode_responses=True)
    # The slot map is loaded on the first command; ssubscribe needs it before that.
    await cluster.initialize()
    yield cluster
    await cluster.aclose()


async def next_sharded_message(pubsub: ClusterPubSub, timeout_s: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        message = await pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            return message
    raise TimeoutError("no sharded message arrived")


def test_the_cluster_forms_with_every_slot_served(redis_cluster: LocalCluster) -> None:
    nodes = redis_cluster.nodes()
    masters = [n for n in nodes if n.role == "master"]
    replicas = [n for n in nodes if n.role == "replica"]
    assert len(masters) == 3 and len(replicas) == 3
    served = sorted(r for m in masters for r in m.slots)
    assert sum(last - first + 1 for first, last in served) == SLOTS
    assert served[0][0] == 0 and served[-1][1] == SLOTS - 1
    assert {r.master_id for r in replicas} == {m.node_id for m in masters}
    for node in nodes:
        assert redis_cluster.info(node.port)["cluster_state"] == "ok"


def test_every_node_has_a_bus_port_of_its_own(redis_cluster: LocalCluster) -> None:
    ports = redis_cluster.ports + list(redis_cluster.bus_ports.values())
    assert len(set(ports)) == 12
    for port in redis_cluster.ports:
        node = redis.Redis(port=port, decode_responses=True)
        bus_port = redis_cluster.bus_ports[port]
        assert node.config_get("cluster-port") == {"cluster-port": str(bus_port)}
        node.close()


async def test_keys_in_different_slots_are_written_and_read(
    client: RedisCluster, redis_cluster: LocalCluster
) -> None:
    owners = {redis_cluster.master_for_key(key).port for key in KEYS}
    assert len({key_slot(k.encode()) for k in KEYS}) == 3 and len(owners) == 3
    for key in KEYS:
        await client.set(key, key.upper())
    assert [await client.get(key) for key in KEYS] == [key.upper() for key in KEYS]


async def test_sharded_pubsub_delivers_on_every_shard(
    client: RedisCluster, redis_cluster: LocalCluster
) -> None:
    channels = ["{s:one}", "{s:two}", "{s:three}"]
    assert len({redis_cluster.master_for_key(c).port for c in channels}) > 1
    pubsub = client.pubsub()
    await pubsub.ssubscribe(*channels)
    for channel in channels:
        assert await client.spublish(channel, f"gift on {channel}") == 1
    received = {}
    for _ in channels:
        message = await next_sharded_message(pubsub)
        received[message["channel"]] = message["data"]
    assert received == {c: f"gift on {c}" for c in channels}
    await pubsub.aclose()


async def test_a_plain_connection_to_the_slot_master_can_ssubscribe(
    client: RedisCluster, redis_cluster: LocalCluster
) -> None:
    channel = "{s:plain}"
    master = redis_cluster.master_for_key(channel)
    direct = aioredis.Redis(host=master.host, port=master.port, decode_responses=True)
    pubsub = direct.pubsub()
    await pubsub.ssubscribe(channel)
    assert await client.spublish(channel, "hello") == 1
    deadline = time.monotonic() + 5
    message = None
    while message is None or message["type"] != "smessage":
        assert time.monotonic() < deadline, "no sharded message arrived"
        message = await pubsub.get_message(timeout=0.1)
    assert message["data"] == "hello"
    await pubsub.aclose()
    await direct.aclose()


async def test_a_killed_master_is_replaced_by_its_replica(
    client: RedisCluster, redis_cluster: LocalCluster
) -> None:
    key = KEYS[0]
    await client.set(key, "before")
    old_master = redis_cluster.master_for_key(key)
    (replica,) = redis_cluster.replicas_of(old_master)

    redis_cluster.kill(old_master)
    new_master = await asyncio.to_thread(redis_cluster.wait_for_failover, old_master)

    assert new_master.port == replica.port
    assert new_master.slots == old_master.slots
    # The client finds the new master itself (its next command refreshes the slot map).
    await client.set(key, "after")
    assert await client.get(key) == "after"

    redis_cluster.restart(old_master)
    assert redis_cluster.node(old_master.port).role == "replica"
    assert redis_cluster.node(old_master.port).master_id == new_master.node_id


def redis_servers_on(ports: list[int]) -> list[int]:
    """Pids of running redis-server processes listening on one of `ports` (redis-server
    sets its process title to `redis-server 127.0.0.1:PORT [cluster]`)."""
    addresses = {f"127.0.0.1:{port}".encode() for port in ports}
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            command = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        title = b" ".join(command).split()
        if title and title[0].endswith(b"redis-server") and addresses & set(title):
            pids.append(int(proc.name))
    return pids


def test_stop_leaves_no_redis_server_behind(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, masters=3, replicas=0, node_timeout_ms=NODE_TIMEOUT_MS)
    with cluster:
        started = [p.pid for p in cluster.processes.values()]
        assert sorted(started) == sorted(redis_servers_on(cluster.ports))
    assert redis_servers_on(cluster.ports) == []
    assert all(not Path(f"/proc/{pid}").exists() for pid in started)
    assert (tmp_path / "node-1" / "nodes.conf").exists()  # nothing removed


def test_the_same_data_dir_brings_the_same_cluster_back(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, masters=3, replicas=0, node_timeout_ms=NODE_TIMEOUT_MS) as first:
        client = redis.Redis(port=first.master_for_key("{u:carol}").port)
        client.set("{u:carol}", "kept")
        client.close()
        ids = {n.node_id for n in first.nodes()}
    with LocalCluster(tmp_path, node_timeout_ms=NODE_TIMEOUT_MS) as again:
        assert {n.node_id for n in again.nodes()} == ids
        client = redis.Redis(port=again.master_for_key("{u:carol}").port)
        assert client.get("{u:carol}") == b"kept"
        client.close()


async def test_a_sharded_subscriber_follows_a_failover_once_it_refreshes_the_slot_map(
    client: RedisCluster, redis_cluster: LocalCluster, cluster_url: str
) -> None:
    # A client that only listens sends no command that would find the new master, so
    # get_sharded_message keeps raising ConnectionError for the dead node: on that
    # error the listener reloads the slot map, which moves its shard subscriptions
    # to the node that now serves the slot (ClusterPubSub.on_slots_changed).
    listener = RedisCluster.from_url(cluster_url, decode_responses=True)
    await listener.initialize()
    pubsub = listener.pubsub()
    try:
        channel = "{s:failover}"
        await pubsub.ssubscribe(channel)
        old_master = redis_cluster.master_for_key(channel)
        redis_cluster.kill(old_master)
        await asyncio.to_thread(redis_cluster.wait_for_failover, old_master)

        deadline = time.monotonic() + 10
        message = None
        while message is None:
            assert time.monotonic() < deadline, "the subscription did not follow the failover"
            # Pub/sub keeps nothing for an absent subscriber: publish until one arrives.
            await client.spublish(channel, "after the failover")
            try:
                message = await pubsub.get_sharded_message(
                    ignore_subscribe_messages=True, timeout=0.1
                )
            except (redis.ConnectionError, RuntimeError):
                # RuntimeError: redis-py 8.1 raises "pubsub connection not set" for a
                # shard whose subscription is being moved while the slot map reloads.
                await listener.nodes_manager.initialize()
        assert message["data"] == "after the failover"
    finally:
        await pubsub.aclose()
        await listener.aclose()


def test_a_new_cluster_picks_other_ports_when_one_was_taken_before_its_node_bound_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        held = int(holder.getsockname()[1])
        real_pick = local_cluster.free_ports
        picks = iter([[held, *real_pick(5)]])  # the first attempt's first node: taken
        monkeypatch.setattr(
            local_cluster, "free_ports", lambda count: next(picks, None) or real_pick(count)
        )
        cluster = LocalCluster(
            tmp_path / "cluster", masters=3, replicas=0, node_timeout_ms=NODE_TIMEOUT_MS
        )
        with cluster:
            assert held not in cluster.ports and held not in cluster.bus_ports.values()
            assert all(cluster.info(port)["cluster_state"] == "ok" for port in cluster.ports)
            for port in cluster.ports:
                node = redis.Redis(port=port)
                assert int(node.info("server")["process_id"]) == cluster.processes[port].pid
                node.close()
