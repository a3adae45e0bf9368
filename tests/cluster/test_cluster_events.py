"""Stream events on a cluster: the scripts SPUBLISH them on the master of the
stream's slot (classic PUBLISH on a single Redis: tests/ledger/test_events.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from gifting_server.ledger import keys, streams
from gifting_server.ledger.store import Store, connect
from gifting_server.ledger.stream_state import publish_viewers
from gifting_server.local_cluster import LocalCluster
from tests.conftest import make_settings

pytestmark = pytest.mark.cluster


@pytest.fixture
async def store(cluster_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(await connect(cluster_url, 1.0), make_settings(cluster_url, tmp_path))
    yield store
    await store.close()


async def test_scripts_spublish_on_the_master_of_the_streams_slot(
    redis_cluster: LocalCluster, store: Store
) -> None:
    await streams.start_stream(store, "streamer1", "s1")
    master = redis_cluster.master_for_key(keys.stream("s1"))
    node = redis.Redis(host=master.host, port=master.port)
    sharded, classic = node.pubsub(), node.pubsub()
    try:
        sharded.ssubscribe(keys.stream_channel("s1"))
        classic.subscribe(keys.stream_channel("s1"))
        for pubsub in (sharded, classic):
            assert pubsub.get_message(timeout=1.0) is not None  # the confirmation
        await publish_viewers(store, "s1", 7)
        message = sharded.get_sharded_message(timeout=2.0)
        assert message is not None and message["type"] == "smessage"
        assert b'"kind":"viewers"' in message["data"] and b'"count":7' in message["data"]
        assert classic.get_message(timeout=0.3) is None
    finally:
        sharded.close()
        classic.close()
        node.close()
