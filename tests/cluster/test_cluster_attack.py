"""Attacks on the cluster's money path with `replicas_acked = 1`: a gift across
slots whose replica falls short at each of its steps (the relay and the retry
still finish it, once), scripts the master forgot (NOSCRIPT) held in a batch
behind a WAIT, a caller cancelled while its batch waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, payments, transfers, wallet
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import Store, connect
from gifting_server.local_cluster import LocalCluster, NodeInfo
from tests.cluster.test_replica_ack import killed, node_client, replicas_in_sync  # noqa: F401
from tests.conftest import make_settings
from tests.factories import fund, live_stream, viewer

pytestmark = pytest.mark.cluster

WAIT_TIMEOUT_MS = 400
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
    relayed = await transfers.relay_transfers(store, [slot], int(time.time() * 1000) + 1)
    assert relayed == 1  # the debit ran: its transfer is in the outbox
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
