"""On a cluster, a money script whose keys are one user's journals in that user's
slot: a cash-out runs on its streamer's master and its journal entry lands there."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from gifting_server.ledger import cashouts, keys, wallet
from gifting_server.ledger.reconcile import reconcile_main
from gifting_server.ledger.store import Store, connect, connect_cluster
from gifting_server.local_cluster import LocalCluster
from tests.conftest import make_settings


@pytest.mark.cluster
async def test_a_cashout_on_a_cluster_journals_in_its_streamers_slot(
    redis_cluster: LocalCluster, cluster_url: str, tmp_path: Path
) -> None:
    economy = {"holding_period_days": 0, "cashout_min_diamonds": 2}
    store = Store(
        await connect(cluster_url, 1.0), make_settings(cluster_url, tmp_path, economy=economy)
    )
    try:
        for streamer in ("carol", "alice", "dave"):  # one per master
            master = redis_cluster.master_for_key(keys.wallet(streamer))
            node = redis.Redis(host=master.host, port=master.port, decode_responses=True)
            node.hset(keys.wallet(streamer), "diamonds", 100)
            paid = await wallet.cashout(store, streamer, 40, "c1")
            assert (paid.diamonds, paid.diamonds_left) == (40, 60)
            [(_, entry)] = node.xrange(keys.journal(streamer))
            assert (entry["type"], entry["user"], entry["diamonds"]) == ("cashout", streamer, "40")
            node.close()
        assert not await store.redis.exists(keys.LEGACY_JOURNAL)
    finally:
        await store.close()


async def seed_ledger_across_slots(cluster: RedisCluster) -> None:
    """What a purchase, a gift and a cash-out leave behind, written key by key: each
    journal and account in its user's slot (a gift cannot run on a cluster yet)."""
    purchase = {"type": "purchase", "user": "alice", "payment": "e1", "package": "coins_100"}
    await cluster.xadd(keys.journal("alice"), purchase | {"coins": 100, "settled": 0})
    await cluster.set(keys.payment_seen("e1"), "alice|payment.succeeded|coins_100|100|100|0|0")
    await cluster.xadd(keys.journal("tina"), {"type": "gift", "user": "alice", "to": "tina",
                       "stream": "s1", "coins": 10, "diamonds": 5, "platform": 5})  # fmt: skip
    await cluster.xadd(keys.journal("tina"), {"type": "cashout", "user": "tina", "diamonds": 2})
    await cluster.hset(keys.wallet("alice"), mapping={"coins": 90})
    await cluster.hset(keys.wallet("tina"), mapping={"diamonds": 3, "received": 10})
    await cluster.hset(keys.platform_account("tina"), "coins", 5)
    await cluster.zadd(keys.stream_leaderboard("s1"), {"alice": 10})
    await cluster.zadd(keys.channel_leaderboard("tina", "all"), {"alice": 10})


@pytest.mark.cluster
def test_reconcile_audits_every_master_of_a_cluster(
    redis_cluster: LocalCluster, cluster_url: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    async def seed() -> None:
        cluster = await connect_cluster(cluster_url, 5.0)
        try:
            await seed_ledger_across_slots(cluster)
        finally:
            await cluster.aclose()

    asyncio.run(seed())
    shard = redis_cluster.master_for_key
    assert shard(keys.journal("alice")).port != shard(keys.journal("tina")).port
    settings = make_settings(cluster_url, tmp_path)
    assert reconcile_main(settings, cluster_url) == 0, capsys.readouterr()
    out = capsys.readouterr().out
    assert "OK: 3 journal entries, 2 wallets" in out, out

    master = redis_cluster.master_for_key(keys.platform_account("tina"))
    node = redis.Redis(host=master.host, port=master.port)
    node.hincrby(keys.platform_account("tina"), "coins", 1)
    node.close()
    assert reconcile_main(settings, cluster_url) == 1
    assert "platform account {u:tina}:platform holds coins 6" in capsys.readouterr().out


@pytest.mark.cluster
async def test_a_failed_cashout_on_a_cluster_returns_in_its_streamers_slot(
    redis_cluster: LocalCluster, cluster_url: str, tmp_path: Path
) -> None:
    """The operator's call has only the id: it finds the streamer's slot from it (or,
    for an id of the older form, by a scan of every master), on every master."""
    economy = {"holding_period_days": 0, "cashout_min_diamonds": 2}
    settings = make_settings(cluster_url, tmp_path, economy=economy)
    store = Store(await connect(cluster_url, 1.0), settings)
    try:
        for streamer in ("carol", "alice", "dave"):  # one per master
            master = redis_cluster.master_for_key(keys.wallet(streamer))
            node = redis.Redis(host=master.host, port=master.port, decode_responses=True)
            node.hset(keys.wallet(streamer), "diamonds", 100)
            made = await wallet.cashout(store, streamer, 40, "c1")
            old_form = await wallet.cashout(store, streamer, 20, "c2")
            record = node.hget(keys.cashouts(streamer), old_form.cashout_id)
            assert record is not None
            legacy_id = f"co_legacy{streamer}"
            node.hdel(keys.cashouts(streamer), old_form.cashout_id)
            node.hset(
                keys.cashouts(streamer),
                legacy_id,
                record.replace(old_form.cashout_id, legacy_id),
            )
            failed = await cashouts.complete(store, made.cashout_id, "failed")
            assert (failed["status"], failed["diamonds"]) == ("failed", 40)
            paid = await cashouts.complete(store, legacy_id, "paid")
            assert (paid["status"], paid["cashout_id"]) == ("paid", legacy_id)
            assert node.hget(keys.wallet(streamer), "diamonds") == "80"
            kinds = [entry["type"] for _, entry in node.xrange(keys.journal(streamer))]
            assert kinds == ["cashout", "cashout", "cashout_failed"]
            node.close()
    finally:
        await store.close()
