"""Attacks on the cluster's money path with `replicas_acked = 1`: a gift across
slots whose replica falls short at each of its steps (the relay and the retry
still finish it, once), scripts the master forgot (NOSCRIPT) held in a batch
behind a WAIT, a caller cancelled while its batch waits."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.events import history_events
from gifting_server.ledger import gifts, keys, payments, streams, transfers, wallet
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import Store, connect
from gifting_server.ledger.stream_state import publish_viewers
from gifting_server.local_cluster import LocalCluster, NodeInfo
from tests.cluster.test_cluster_hub import (
    assert_no_silent_gap,
    one_stream_per_master,
    publish_until_served,
    received,
    seen,
)
from tests.cluster.test_replica_ack import killed, node_client, replicas_in_sync  # noqa: F401
from tests.conftest import ServerThread, make_settings
from tests.factories import fund, live_stream, token, viewer
from tests.hub.wsclient import WsClient

pytestmark = pytest.mark.cluster

WAIT_TIMEOUT_MS = 1500  # long enough for a loaded machine's replica to answer
BUY = "payment.succeeded"


@pytest.fixture
async def store(
    redis_cluster: LocalCluster, cluster_url: str, tmp_path: Path
) -> AsyncIterator[Store]:
    replicas_in_sync(redis_cluster)
    settings = make_settings(
        cluster_url,
        tmp_path,
        economy={"holding_period_days": 0},
        redis={"replicas_acked": 1, "replicas_timeout_ms": WAIT_TIMEOUT_MS},
    )
    store = Store(await connect(cluster_url, 1.0), settings)
    yield store
    await store.close()


def one_per_master(cluster: LocalCluster) -> tuple[str, str, str]:
    """A sender, a stream and a streamer whose slots are on three masters."""
    masters = [node.port for node in cluster.nodes() if node.role == "master" and not node.failed]
    assert len(masters) == 3

    def on(master: int, key: object, prefix: str) -> str:
        for n in range(10_000):
            name = f"{prefix}{n}"
            if cluster.master_for_key(key(name)).port == master:  # type: ignore[operator]
                return name
        raise AssertionError(f"nothing on {master}")

    return (
        on(masters[0], keys.wallet, "v"),
        on(masters[1], keys.stream, "s"),
        on(masters[2], keys.wallet, "t"),
    )


async def relay_until(store: Store, slots: list[int], wanted: int, timeout_s: float = 30) -> int:
    """Relay passes until `wanted` transfers were finished: a replica just back may
    still miss a WAIT or two (a transfer that fell short goes back to its outbox)."""
    finished, deadline = 0, time.monotonic() + timeout_s
    while finished < wanted and time.monotonic() < deadline:
        finished += await transfers.relay_transfers(store, slots, int(time.time() * 1000) + 1)
    return finished


@pytest.mark.parametrize("short_side", ["sender", "stream", "streamer"])
async def test_a_gift_short_of_a_replica_at_any_step_is_finished_once(
    redis_cluster: LocalCluster,
    store: Store,
    killed: list[NodeInfo],  # noqa: F811
    short_side: str,
) -> None:
    """The replica of one side's master is down: the gift fails with
    service_unavailable at that side's step (the steps before it ran). Once the
    replica is back the relay finishes the transfer, and the client's retry with
    the same key answers it: debited once, credited once."""
    sender, stream_id, streamer = one_per_master(redis_cluster)
    await fund(store, sender)
    await live_stream(store, stream_id, streamer)
    side_key = {
        "sender": keys.wallet(sender),
        "stream": keys.stream(stream_id),
        "streamer": keys.wallet(streamer),
    }[short_side]
    replica = redis_cluster.replicas_of(redis_cluster.master_for_key(side_key))[0]
    redis_cluster.kill(replica)
    killed.append(replica)
    with pytest.raises(GiftingError) as short:
        await gifts.send_gift(store, viewer(sender), stream_id, "rose", 1, "k1")
    assert short.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert (await wallet.read_wallet(store, sender))["coins"] == 99  # the debit ran

    await asyncio.to_thread(redis_cluster.restart, replica)
    replicas_in_sync(redis_cluster)
    slot = keys.slot_of_tag(f"u:{sender}")
    assert await relay_until(store, [slot], 1) == 1  # the debit ran: its transfer is waiting
    retried = await gifts.send_gift(store, viewer(sender), stream_id, "rose", 1, "k1")
    again = await gifts.send_gift(store, viewer(sender), stream_id, "rose", 1, "k1")
    assert retried.replayed and again == retried
    assert retried.coins == 99
    assert (await wallet.read_wallet(store, sender))["coins"] == 99
    assert await store.redis.hget(keys.wallet(streamer), "received") == "1"
    report = await reconcile(store.redis, store.settings.economy.creator_share_bps)
    assert report.ok, report.format()


PACKAGES = {"coins_100": 100, "coins_500": 500, "coins_1000": 1000, "coins_5000": 5000}


async def test_forgotten_scripts_and_cancelled_callers_in_batches_held_by_a_wait(
    redis_cluster: LocalCluster, store: Store
) -> None:
    """Every master forgot its scripts (a restart, SCRIPT FLUSH): the NOSCRIPT replies
    come back in batches held by their WAIT. Meanwhile half the callers are
    cancelled at once. Each caller still answered gets its own result (a package per
    user tells them apart), and every event, redelivered, is credited once."""
    await fund(store, "warmup")  # every script loaded, every connection made
    for node in redis_cluster.nodes():
        if node.role == "master" and not node.failed:
            client = node_client(node)
            client.script_flush()
            client.close()
    users = [(f"u{n}", list(PACKAGES)[n % len(PACKAGES)]) for n in range(40)]

    async def buy(user: str, package: str) -> tuple[int, int]:
        bought = await payments.apply_payment(store, user, f"ev-{user}", BUY, package)
        return bought.coins, bought.credited

    calls = [asyncio.ensure_future(buy(user, package)) for user, package in users]
    for _ in range(3):
        await asyncio.sleep(0)  # written, their replies (NOSCRIPT) not yet read
    for call in calls[::2]:
        call.cancel()
    answered = await asyncio.gather(*calls, return_exceptions=True)
    for (_, package), answer in zip(users[1::2], answered[1::2], strict=True):
        assert answer == (PACKAGES[package], PACKAGES[package])
    assert all(isinstance(a, asyncio.CancelledError) for a in answered[::2])
    for user, package in users:  # the provider redelivers what got no 200
        assert await buy(user, package) == (PACKAGES[package], PACKAGES[package])
        assert (await wallet.read_wallet(store, user))["coins"] == PACKAGES[package]
    report = await reconcile(store.redis, store.settings.economy.creator_share_bps)
    assert report.ok, report.format()
    assert report.pending_payments == []


async def test_events_a_failover_lost_are_taken_back_from_the_viewers_before_new_ones(
    redis_cluster: LocalCluster,
    cluster_url: str,
    tmp_path: Path,
    killed: list[NodeInfo],  # noqa: F811
) -> None:
    """Counts 2..4 reach the viewer live from a master whose replica is stopped;
    the master dies, the replica (with what came before its link was cut only)
    takes over, and the stream's next events take the lost ids again. The viewer is
    told it restarts where the promoted history parts from what it got
    (`subscribed {recovered: false}`) and gets every new event, whether they were
    published before the worker read the history again or after. The worker
    publishes state events of its own (its viewer count, the first top gifters):
    where the history parts is read from the promoted replica, not assumed."""
    plain = Store(await connect(cluster_url, 1.0), make_settings(cluster_url, tmp_path))
    stream_id = one_stream_per_master(redis_cluster)[0]
    await streams.start_stream(plain, "streamer1", stream_id)
    master = redis_cluster.master_for_key(keys.stream(stream_id))
    replica = redis_cluster.replicas_of(master)[0]
    with ServerThread(make_settings(cluster_url, tmp_path / "worker")) as worker:
        async with await WsClient.open(worker.url, token("ann")) as viewer:
            await viewer.subscribe(stream_id)
            await publish_viewers(plain, stream_id, 1)
            await received(viewer, stream_id, 1)
            replicas_in_sync(redis_cluster)
            redis_cluster.processes[replica.port].send_signal(signal.SIGSTOP)
            try:
                # Its link dropped while it is stopped: nothing more reaches it.
                with node_client(master) as client:
                    client.client_kill_filter(_type="replica")
                for count in (2, 3, 4):  # on the master only
                    await publish_viewers(plain, stream_id, count)
                head = await plain.redis.hget(keys.stream(stream_id), "seq")
                await received(viewer, stream_id, int(head))
                delivered = {event["event_id"]: event for event in viewer_events(viewer, stream_id)}
                redis_cluster.kill(master)
                killed.append(master)
            finally:
                redis_cluster.processes[replica.port].send_signal(signal.SIGCONT)
            promoted = await asyncio.to_thread(redis_cluster.wait_for_failover, master)
            parted = kept_of(promoted, stream_id, delivered)
            assert parted < int(head) - 2, (parted, head)  # counts 2..4 at least are lost
            new_counts = list(range(100, 106))
            published = [await publish_until_served(plain, stream_id, n) for n in new_counts]
            assert published[0] <= int(head)  # lost ids are taken again
            await received_count(viewer, stream_id, new_counts[-1])
            history = seen(viewer, stream_id)
            assert ("subscribed", (False, parted)) in history, (parted, history)
            assert_no_silent_gap(history)
            counts = viewer_counts(viewer, stream_id)
            first_new = counts.index(new_counts[0])
            assert [c for c in counts[:first_new] if c > 1] == [2, 3, 4], counts
            assert [c for c in counts if c >= 100] == new_counts, counts
            viewer.assert_no_traceback()
    await plain.close()


def viewer_events(client: WsClient, stream_id: str) -> list[dict[str, Any]]:
    return [
        event
        for message in client.received
        if message.get("stream_id") == stream_id and message["type"] == "events"
        for event in message["events"]
    ]


def kept_of(promoted: NodeInfo, stream_id: str, delivered: dict[int, dict[str, Any]]) -> int:
    """The newest event id up to which the promoted node's history is what the viewer
    got: each stored event equal to the delivered one with its id."""
    with node_client(promoted) as client:
        rows: list[tuple[str, dict[str, str]]] = client.xrange(keys.stream_history(stream_id))
    kept = 0
    stored_events = [
        orjson.loads(raw) for _, fields in rows for raw in history_events(fields["e"].encode())
    ]
    for stored in stored_events:
        if delivered.get(stored["event_id"]) != stored:
            break
        kept = stored["event_id"]
    return kept


def viewer_counts(client: WsClient, stream_id: str) -> list[int]:
    """The counts of the `viewers` events the client got, in order, those the
    worker publishes itself (0 or 1 here) included."""
    return [
        int(event["count"])
        for message in client.received
        if message.get("stream_id") == stream_id and message["type"] == "events"
        for event in message["events"]
        if event.get("kind") == "viewers"
    ]


async def received_count(client: WsClient, stream_id: str, count: int) -> None:
    deadline = time.monotonic() + 20
    while count not in viewer_counts(client, stream_id):
        assert time.monotonic() < deadline, seen(client, stream_id)
        await asyncio.sleep(0.02)


async def test_a_relay_pass_goes_on_past_a_transfer_whose_credit_is_short_of_a_replica(
    redis_cluster: LocalCluster,
    store: Store,
    killed: list[NodeInfo],  # noqa: F811
) -> None:
    """Two transfers left debited by a dead worker: the first one's streamer is on a
    master whose replica is down, the second's is not. The relay finishes the second
    in the same pass, and the first once the replica is back."""
    short_master = next(
        node for node in redis_cluster.nodes() if node.role == "master" and not node.failed
    )

    def off_short(key: object, prefix: str, on: NodeInfo | None = None) -> str:
        for n in range(10_000):
            name = f"{prefix}{n}"
            port = redis_cluster.master_for_key(key(name)).port  # type: ignore[operator]
            if (port == on.port) if on else (port != short_master.port):
                return name
        raise AssertionError("no such name")

    stuck_streamer = off_short(keys.wallet, "t", on=short_master)
    fine_streamer = off_short(keys.wallet, "f")
    stuck_stream, fine_stream = off_short(keys.stream, "s"), off_short(keys.stream, "x")
    senders = off_short(keys.wallet, "v"), off_short(keys.wallet, "w")
    await live_stream(store, stuck_stream, stuck_streamer)
    await live_stream(store, fine_stream, fine_streamer)
    rose = store.settings.gift("rose")
    assert rose is not None
    for sender, (stream_id, streamer) in zip(
        senders, [(stuck_stream, stuck_streamer), (fine_stream, fine_streamer)], strict=True
    ):
        await fund(store, sender)
        who = viewer(sender)
        fragment = gifts.event_fragment(who, rose)
        await transfers.debit(store, who, stream_id, streamer, rose, 1, "k1", fragment)
    replica = redis_cluster.replicas_of(short_master)[0]
    redis_cluster.kill(replica)
    killed.append(replica)

    slots = [keys.slot_of_tag(f"u:{sender}") for sender in senders]  # the stuck one first
    later = int(time.time() * 1000) + 1
    assert await transfers.relay_transfers(store, slots, later) == 1
    assert await store.redis.hget(keys.wallet(fine_streamer), "received") == "1"
    assert await store.redis.hget(keys.wallet(stuck_streamer), "received") in (None, "1")

    await asyncio.to_thread(redis_cluster.restart, replica)
    replicas_in_sync(redis_cluster)
    assert await relay_until(store, slots, 1) == 1
    assert await store.redis.hget(keys.wallet(stuck_streamer), "received") == "1"
    report = await reconcile(store.redis, store.settings.economy.creator_share_bps)
    assert report.ok, report.format()
