"""`store.connect` picks the client for the topology at the URL; a store over a
cluster runs its scripts on the master of their keys."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis
from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys, wallet
from gifting_server.ledger.cluster_pipeline import ClusterScriptPipeline
from gifting_server.ledger.pipeline import ScriptPipeline
from gifting_server.ledger.scripts import Scripts
from gifting_server.ledger.store import Store, connect, guarded
from gifting_server.local_cluster import LocalCluster
from tests.conftest import make_settings
from tests.redis_process import RedisProcess


@pytest.mark.cluster
async def test_any_node_of_a_cluster_gives_a_cluster_client(redis_cluster: LocalCluster) -> None:
    for url in redis_cluster.urls:
        client = await connect(url, 1.0)
        try:
            assert isinstance(client, RedisCluster)
            assert len(client.get_primaries()) == 3  # the slot map is loaded
        finally:
            await client.aclose()


@pytest.mark.cluster
async def test_a_store_over_a_cluster_runs_scripts_on_the_master_of_their_keys(
    redis_cluster: LocalCluster, cluster_url: str, tmp_path: Path
) -> None:
    store = Store(await connect(cluster_url, 1.0), make_settings(cluster_url, tmp_path))
    try:
        assert isinstance(store.scripts.pipeline, ClusterScriptPipeline)
        users = ["carol", "alice", "dave"]  # one per master
        for n, user in enumerate(users):
            assert await wallet.set_daily_limit(store, user, 100 + n) == 100 + n
        for n, user in enumerate(users):
            master = redis_cluster.master_for_key(keys.wallet(user))
            node = redis.Redis(host=master.host, port=master.port, decode_responses=True)
            assert node.hget(keys.wallet(user), "limit") == str(100 + n)
    finally:
        await store.close()


async def test_a_single_redis_gives_the_single_client(redis_server: RedisProcess) -> None:
    client = await connect(redis_server.url, 1.0)
    try:
        assert isinstance(client, Redis)
        assert type(Scripts.of(client).pipeline) is ScriptPipeline
    finally:
        await client.aclose()


async def test_a_redis_not_up_yet_is_taken_for_a_single_one() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = await connect(f"redis://127.0.0.1:{port}", 0.5)
    try:
        assert isinstance(client, Redis)
        with pytest.raises(redis.ConnectionError):
            await client.ping()
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "error",
    [
        redis_errors.ClusterDownError("The cluster is down"),
        redis_errors.TryAgainError("Multiple keys request during rehashing of slot"),
        redis_errors.SlotNotCoveredError('Slot "7" not covered by the cluster'),
        redis_errors.ClusterError("slot 7: more than 5 redirections"),
    ],
)
async def test_a_cluster_between_owners_of_a_slot_is_a_retryable_error(
    error: Exception,
) -> None:
    async def call() -> None:
        raise error

    with pytest.raises(GiftingError) as refused:
        await guarded(call())
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
