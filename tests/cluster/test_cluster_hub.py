"""The hub on a cluster: scripts SPUBLISH a stream's events on the shard of its slot,
a worker's viewers get them from every master, `since` recovers from the history,
and after a master dies the worker subscribes again by itself with no silent gap."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.crc import key_slot

from gifting_server.errors import GiftingError
from gifting_server.ledger import keys, streams
from gifting_server.ledger.store import Store, connect
from gifting_server.ledger.stream_state import publish_viewers
from gifting_server.local_cluster import LocalCluster, NodeInfo
from tests.conftest import ServerThread, make_settings
from tests.factories import token
from tests.hub.wsclient import WsClient

pytestmark = pytest.mark.cluster


def one_stream_per_master(cluster: LocalCluster) -> list[str]:
    by_master: dict[int, str] = {}
    for n in range(1, 100):
        stream_id = f"s{n}"
        by_master.setdefault(cluster.master_for_key(keys.stream(stream_id)).port, stream_id)
    assert len(by_master) == 3
    return sorted(by_master.values())


@pytest.fixture
async def store(cluster_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(await connect(cluster_url, 1.0), make_settings(cluster_url, tmp_path))
    yield store
    await store.close()


@pytest.fixture
def worker(cluster_url: str, tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(make_settings(cluster_url, tmp_path)) as running:
        yield running


def seen(client: WsClient, stream_id: str) -> list[tuple[str, Any]]:
    """("subscribed", (recovered, last_event_id)) or ("event", event_id), in order."""
    out: list[tuple[str, Any]] = []
    for message in client.received:
        if message.get("stream_id") != stream_id:
            continue
        if message["type"] == "subscribed":
            out.append(("subscribed", (message["recovered"], message["last_event_id"])))
        elif message["type"] == "events":
            out += [("event", event["event_id"]) for event in message["events"]]
    return out


async def received(client: WsClient, stream_id: str, event_id: int, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while ("event", event_id) not in seen(client, stream_id):
        assert time.monotonic() < deadline, seen(client, stream_id)
        await asyncio.sleep(0.02)


async def test_a_viewer_gets_the_events_of_streams_on_every_master(
    redis_cluster: LocalCluster, store: Store, worker: ServerThread
) -> None:
    stream_ids = one_stream_per_master(redis_cluster)
    for stream_id in stream_ids:
        await streams.start_stream(store, "streamer1", stream_id)
    async with await WsClient.open(worker.url, token("ann")) as viewer:
        for stream_id in stream_ids:
            assert (await viewer.subscribe(stream_id))["recovered"] is True
        for count in (1, 2, 3):
            for stream_id in stream_ids:
                await publish_viewers(store, stream_id, count)
        for stream_id in stream_ids:
            await received(viewer, stream_id, 3)
        for stream_id in stream_ids:
            # The worker publishes its own viewer counts too: more events may follow.
            assert seen(viewer, stream_id)[:4] == [("subscribed", (True, 0))] + [
                ("event", i) for i in (1, 2, 3)
            ]
            assert_no_silent_gap(seen(viewer, stream_id))
        viewer.assert_no_traceback()


async def test_since_recovers_the_missed_events_from_the_history(
    redis_cluster: LocalCluster, store: Store, worker: ServerThread
) -> None:
    stream_ids = one_stream_per_master(redis_cluster)
    for stream_id in stream_ids:
        await streams.start_stream(store, "streamer1", stream_id)
        for count in range(1, 6):
            await publish_viewers(store, stream_id, count)
    async with await WsClient.open(worker.url, token("ann")) as viewer:
        for stream_id in stream_ids:
            subscribed = await viewer.subscribe(stream_id, since=2)
            assert (subscribed["recovered"], subscribed["last_event_id"]) == (True, 5)
        for stream_id in stream_ids:
            await received(viewer, stream_id, 5)
            assert seen(viewer, stream_id)[:4] == [("subscribed", (True, 5))] + [
                ("event", i) for i in (3, 4, 5)
            ]
            assert_no_silent_gap(seen(viewer, stream_id), since=2)


async def publish_until_served(store: Store, stream_id: str, count: int) -> int:
    """Publishes through a failover: a refused call is retried until the slot has a
    master again. Returns the event id."""
    deadline = time.monotonic() + 30
    while True:
        try:
            await publish_viewers(store, stream_id, count)
            head = await store.redis.hget(keys.stream(stream_id), "seq")
            return int(head)
        except GiftingError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def assert_no_silent_gap(history: list[tuple[str, Any]], since: int = 0) -> None:
    """Every event follows the one before it (the first follows `since`), or a
    `subscribed {recovered: false}` tells the viewer it starts again from its
    `last_event_id`."""
    last = since
    for kind, value in history:
        if kind == "subscribed":
            recovered, last_event_id = value
            if not recovered:
                last = last_event_id
            continue
        assert value == last + 1, f"event {value} after {last}: {history}"
        last = value


async def test_after_a_failover_the_worker_subscribes_again_by_itself(
    redis_cluster: LocalCluster, store: Store, worker: ServerThread
) -> None:
    stream_ids = one_stream_per_master(redis_cluster)
    for stream_id in stream_ids:
        await streams.start_stream(store, "streamer1", stream_id)
    watched = stream_ids[0]
    async with await WsClient.open(worker.url, token("ann")) as viewer:
        for stream_id in stream_ids:
            await viewer.subscribe(stream_id)
        for stream_id in stream_ids:
            await publish_viewers(store, stream_id, 1)
        for stream_id in stream_ids:
            await received(viewer, stream_id, 1)

        master = redis_cluster.master_for_key(keys.stream(watched))
        redis_cluster.kill(master)
        await asyncio.to_thread(redis_cluster.wait_for_failover, master)
        published = []
        for count in range(2, 12):
            published.append(await publish_until_served(store, watched, count))
            await asyncio.sleep(0.05)
        newest = published[-1]
        for stream_id in stream_ids[1:]:
            await publish_viewers(store, stream_id, 2)

        await received(viewer, watched, newest, timeout_s=15)
        history = seen(viewer, watched)
        assert_no_silent_gap(history)
        # Every event published after the failover reached the viewer, once.
        events = [v for k, v in history if k == "event"]
        assert set(range(published[0], newest + 1)) <= set(events)
        for stream_id in stream_ids[1:]:
            await received(viewer, stream_id, 2)
            assert_no_silent_gap(seen(viewer, stream_id))
        viewer.assert_no_traceback()


def set_slot(cluster: LocalCluster, port: int, slot: int, *state: str) -> None:
    node = cluster.node(port)
    with redis.Redis(host=node.host, port=node.port) as client:
        client.execute_command("CLUSTER", "SETSLOT", slot, *state)


def move_slot(cluster: LocalCluster, slot: int, target: NodeInfo) -> None:
    """Moves `slot` and its keys to `target`, as `redis-cli --cluster reshard` does."""
    source = cluster.master_for_slot(slot)
    set_slot(cluster, target.port, slot, "IMPORTING", source.node_id)
    set_slot(cluster, source.port, slot, "MIGRATING", target.node_id)
    with redis.Redis(host=source.host, port=source.port) as client:
        while names := client.cluster("GETKEYSINSLOT", slot, 100):
            client.migrate(target.host, target.port, names, 0, 5000)
    for node in cluster.nodes():
        if node.role == "master":
            set_slot(cluster, node.port, slot, "NODE", target.node_id)


async def test_after_a_slot_moves_the_worker_subscribes_on_its_new_master(
    redis_cluster: LocalCluster, store: Store, worker: ServerThread
) -> None:
    stream_ids = one_stream_per_master(redis_cluster)
    watched = stream_ids[0]
    for stream_id in stream_ids:
        await streams.start_stream(store, "streamer1", stream_id)
    slot = key_slot(keys.stream(watched).encode())
    source = redis_cluster.master_for_slot(slot)
    target = next(n for n in redis_cluster.nodes() if n.role == "master" and n.port != source.port)
    async with await WsClient.open(worker.url, token("ann")) as viewer:
        for stream_id in stream_ids:
            await viewer.subscribe(stream_id)
        await publish_viewers(store, watched, 1)
        await received(viewer, watched, 1)
        try:
            move_slot(redis_cluster, slot, target)
            published = [await publish_until_served(store, watched, n) for n in range(2, 8)]
            await received(viewer, watched, published[-1])
            history = seen(viewer, watched)
            assert_no_silent_gap(history)
            events = [v for k, v in history if k == "event"]
            assert set(range(1, published[-1] + 1)) <= set(events)
            viewer.assert_no_traceback()
        finally:
            if redis_cluster.master_for_slot(slot).port != source.port:
                move_slot(redis_cluster, slot, source)
            await asyncio.to_thread(redis_cluster.wait_ready)
