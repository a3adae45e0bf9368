"""On a cluster, a money script whose keys are one user's journals in that user's
slot: a cash-out runs on its streamer's master and its journal entry lands there."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from gifting_server.ledger import keys, wallet
from gifting_server.ledger.store import Store, connect
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
