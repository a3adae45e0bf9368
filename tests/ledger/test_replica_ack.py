"""`[redis] replicas_acked`: a money script is acknowledged only once a replica has
its write, one WAIT per pipelined write; a replica that does not confirm in time
turns the call into a retryable `service_unavailable`, never a silent ack."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys
from gifting_server.ledger.pipeline import NotSent, ReplicaAck, ReplicasNotAcked, ScriptPipeline
from gifting_server.ledger.store import Store, connect_single, masters_short_of_replicas
from tests.conftest import make_settings
from tests.factories import fund, live_stream, viewer
from tests.redis_process import RedisProcess
from tests.topology import single_only

WAIT_TIMEOUT_MS = 500
ECHO = "return {tonumber(ARGV[1]), KEYS[1]}"
INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"


@dataclass
class Replicated:
    primary: RedisProcess
    replica: RedisProcess

    def client(self, server: RedisProcess) -> redis.Redis:
        return redis.Redis.from_url(server.url, decode_responses=True)

    def wait_synced(self, timeout_s: float = 10.0) -> None:
        """Until the replica has every write of the primary, by asking the primary
        itself. (INFO says "online" before a replica fed by a diskless sync gets any
        write: the primary streams to it only after its first ACK, up to 1 s later.)"""
        primary = self.client(self.primary)
        try:
            primary.set("probe", 1)
            assert primary.wait(1, int(timeout_s * 1000)) == 1, "the replica never caught up"
        finally:
            primary.close()

    def wait_calls(self) -> int:
        """WAIT commands the primary ran since its stats were last reset."""
        client = self.client(self.primary)
        try:
            return int(client.info("commandstats").get("cmdstat_wait", {}).get("calls", 0))
        finally:
            client.close()

    def reset_stats(self) -> None:
        client = self.client(self.primary)
        client.config_resetstat()
        client.close()


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Replicated]:
    """A Redis of this test's own with one real replica, in sync."""
    pair = Replicated(RedisProcess(tmp_path / "primary"), RedisProcess(tmp_path / "replica"))
    pair.primary.start("--repl-diskless-sync-delay", "0")  # a replica syncs at once, not in 5 s
    try:
        pair.replica.start("--replicaof", "127.0.0.1", str(pair.primary.port))
        pair.wait_synced()
        yield pair
    finally:
        pair.replica.resume()
        # SIGKILL: a replica asked to stop while it writes its first AOF after the sync
        # refuses (Redis 7.0), and what it holds is of no use after the test.
        pair.replica.kill()
        pair.primary.stop()


async def acked_store(replicated: Replicated, tmp_path: Path, replicas: int = 1) -> Store:
    url = replicated.primary.url
    settings = make_settings(
        url,
        tmp_path / "data",
        redis={"replicas_acked": replicas, "replicas_timeout_ms": WAIT_TIMEOUT_MS},
    )
    # A socket timeout below the WAIT's: a WAIT that waits is not a Redis that hangs.
    return Store(connect_single(url, 0.3), settings)


@pytest.fixture
async def store_acked(replicated: Replicated, tmp_path: Path) -> AsyncIterator[Store]:
    store = await acked_store(replicated, tmp_path)
    yield store
    await store.close()


def shortfalls() -> float:
    return REGISTRY.get_sample_value("gifting_replica_ack_shortfalls_total") or 0.0


async def test_an_acknowledged_gift_is_already_on_the_replica(
    replicated: Replicated, store_acked: Store
) -> None:
    await fund(store_acked, "alice")
    stream = await live_stream(store_acked)
    await gifts.send_gift(store_acked, viewer("alice"), stream, "rose", 1, "k0")  # loaded
    replica = replicated.client(replicated.replica)
    replicated.reset_stats()
    try:
        for key in ("k1", "k2", "k3"):
            receipt = await gifts.send_gift(store_acked, viewer("alice"), stream, "rose", 1, key)
            # Read on the replica right away: no waiting for it to catch up.
            assert replica.hget(keys.wallet("alice"), "coins") == str(receipt.coins)
        assert receipt.coins == 96
        assert replicated.wait_calls() == 3  # the replica confirmed each before its ack
    finally:
        replica.close()


async def test_a_silent_replica_turns_the_gift_into_a_retryable_error_and_the_retry_answers_it(
    replicated: Replicated, store_acked: Store
) -> None:
    await fund(store_acked, "alice")
    stream = await live_stream(store_acked)
    before = shortfalls()
    replicated.replica.suspend()
    try:
        started = time.monotonic()
        with pytest.raises(GiftingError) as refused:
            await gifts.send_gift(store_acked, viewer("alice"), stream, "rose", 1, "k1")
        took = time.monotonic() - started
    finally:
        replicated.replica.resume()
    assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
    assert refused.value.message == (
        "the write is not yet on 1 replica(s); retry with the same key"
    )
    assert WAIT_TIMEOUT_MS / 1000 <= took < WAIT_TIMEOUT_MS / 1000 + 1.0
    assert shortfalls() == before + 1
    # The script ran on the master: a failed WAIT undoes nothing.
    assert await store_acked.redis.hget(keys.wallet("alice"), "coins") == "99"

    replicated.wait_synced()
    retried = await gifts.send_gift(store_acked, viewer("alice"), stream, "rose", 1, "k1")
    assert (retried.coins, retried.replayed) == (99, True)  # answered from its record
    assert await store_acked.redis.hget(keys.wallet("alice"), "coins") == "99"  # debited once


async def test_a_retry_answered_from_the_record_waits_for_the_replica_too(
    replicated: Replicated, store_acked: Store, tmp_path: Path
) -> None:
    """The retry comes through another worker (another connection) and writes nothing:
    its WAIT still waits for the first write (Redis counts every write the master made
    before the retry's last command), so it is not acknowledged before the replica has
    what it answers."""
    await fund(store_acked, "alice")
    stream = await live_stream(store_acked)
    other_worker = await acked_store(replicated, tmp_path / "other")
    try:
        replicated.replica.suspend()
        try:
            for store in (store_acked, other_worker):
                with pytest.raises(GiftingError) as refused:
                    await gifts.send_gift(store, viewer("alice"), stream, "rose", 1, "k1")
                assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
        finally:
            replicated.replica.resume()
        replicated.wait_synced()
        retried = await gifts.send_gift(other_worker, viewer("alice"), stream, "rose", 1, "k1")
        assert (retried.coins, retried.replayed) == (99, True)
    finally:
        await other_worker.close()


async def test_without_replicas_acked_no_wait_is_sent(
    replicated: Replicated, tmp_path: Path
) -> None:
    store = await acked_store(replicated, tmp_path, replicas=0)
    try:
        replicated.reset_stats()
        await fund(store, "alice")
        await live_stream(store)
        await gifts.send_gift(store, viewer("alice"), "s1", "rose", 1, "k1")
        assert replicated.wait_calls() == 0
    finally:
        await store.close()


@pytest.fixture
async def client(replicated: Replicated) -> AsyncIterator[Redis]:
    redis_client = connect_single(replicated.primary.url, 0.3)
    yield redis_client
    await redis_client.aclose()


async def until_a_wait_blocks(client: Redis, timeout_s: float = 5.0) -> None:
    """Until the primary holds a client blocked in WAIT (the pipeline's)."""
    deadline = time.monotonic() + timeout_s
    while int((await client.info("clients"))["blocked_clients"]) < 1:
        assert time.monotonic() < deadline, "no WAIT ever blocked"
        await asyncio.sleep(0.005)


@pytest.fixture
async def pipeline(client: Redis) -> AsyncIterator[ScriptPipeline]:
    pipeline = ScriptPipeline(client, ReplicaAck(1, WAIT_TIMEOUT_MS))
    yield pipeline
    await pipeline.close()


async def test_one_wait_covers_a_whole_pipelined_write(
    replicated: Replicated, client: Redis, pipeline: ScriptPipeline
) -> None:
    sha = await client.script_load(ECHO)
    assert await pipeline.evalsha(sha, ["k"], [0]) == [0, "k"]  # connected
    replicated.reset_stats()
    replies = await asyncio.gather(*(pipeline.evalsha(sha, [f"k{i}"], [i]) for i in range(300)))
    assert replies == [[i, f"k{i}"] for i in range(300)]
    assert replicated.wait_calls() == 1
    assert await pipeline.evalsha(sha, ["k"], [1], acked=False) == [1, "k"]
    assert replicated.wait_calls() == 1  # a call that asks no acknowledgement waits for none


async def test_calls_made_while_a_wait_is_pending_go_out_together_under_one_more(
    replicated: Replicated, client: Redis, pipeline: ScriptPipeline
) -> None:
    sha = await client.script_load(INCR)
    assert await pipeline.evalsha(sha, ["n"], [0]) == 0  # connected
    replicated.reset_stats()
    replicated.replica.suspend()
    try:
        first = asyncio.ensure_future(pipeline.evalsha(sha, ["n"], [1]))
        await until_a_wait_blocks(client)
        later = [asyncio.ensure_future(pipeline.evalsha(sha, ["n"], [1])) for _ in range(50)]
        with pytest.raises(ReplicasNotAcked):
            await first
    finally:
        replicated.replica.resume()
    assert await asyncio.gather(*later) == list(range(2, 52))
    assert replicated.wait_calls() == 2


async def test_a_shortfall_fails_every_call_of_the_write_and_an_error_reply_stays_itself(
    replicated: Replicated, client: Redis, pipeline: ScriptPipeline
) -> None:
    sha = await client.script_load(INCR)
    await client.set("text", "not a number")
    assert await pipeline.evalsha(sha, ["n"], [0]) == 0  # connected
    replicated.replica.suspend()
    try:
        started = time.monotonic()
        replies = await asyncio.gather(
            *(pipeline.evalsha(sha, [key], [1]) for key in ("n", "text", "m")),
            return_exceptions=True,
        )
        took = time.monotonic() - started
    finally:
        replicated.replica.resume()
    short, bad, short_too = replies
    assert isinstance(short, ReplicasNotAcked) and isinstance(short_too, ReplicasNotAcked)
    assert isinstance(bad, redis_errors.ResponseError)  # it wrote nothing: nothing to wait for
    assert not isinstance(bad, ReplicasNotAcked)
    # Waited for WAIT's timeout, not failed by the socket timeout (0.3 s) before it.
    assert WAIT_TIMEOUT_MS / 1000 <= took < WAIT_TIMEOUT_MS / 1000 + 1.0
    assert await client.mget("n", "m") == ["1", "1"]  # they ran: nothing is undone
    replicated.wait_synced()
    assert await pipeline.evalsha(sha, ["n"], [1]) == 2  # the same connection serves on


async def test_a_killed_replica_fails_the_calls_with_a_shortfall(
    replicated: Replicated, client: Redis, pipeline: ScriptPipeline
) -> None:
    sha = await client.script_load(ECHO)
    assert await pipeline.evalsha(sha, ["k"], [0]) == [0, "k"]
    replicated.replica.kill()
    with pytest.raises(ReplicasNotAcked, match=r"not yet on 1 replica\(s\) \(0 acknowledged\)"):
        await pipeline.evalsha(sha, ["k"], [1])


async def test_a_primary_lost_during_a_wait_fails_what_ran_as_lost_and_what_waited_as_not_sent(
    replicated: Replicated, client: Redis, pipeline: ScriptPipeline
) -> None:
    sha = await client.script_load(INCR)
    assert await pipeline.evalsha(sha, ["n"], [0]) == 0  # connected
    replicated.replica.suspend()
    try:
        ran = asyncio.ensure_future(pipeline.evalsha(sha, ["n"], [1]))
        await until_a_wait_blocks(client)  # the call was answered, its WAIT not
        queued = asyncio.ensure_future(pipeline.evalsha(sha, ["n"], [1]))
        await asyncio.sleep(0)  # made: it waits behind the WAIT
        replicated.primary.kill()
        with pytest.raises(redis_errors.ConnectionError) as lost:
            await ran
        assert not isinstance(lost.value, NotSent)  # it ran: it must not be sent again
        with pytest.raises(NotSent):  # held behind the WAIT, never written
            await queued
    finally:
        replicated.replica.resume()


async def test_a_hung_primary_times_out_after_the_socket_and_wait_timeouts_then_recovers(
    replicated: Replicated, client: Redis, pipeline: ScriptPipeline
) -> None:
    sha = await client.script_load(ECHO)
    assert await pipeline.evalsha(sha, ["k"], [0]) == [0, "k"]
    replicated.primary.suspend()
    try:
        started = time.monotonic()
        with pytest.raises(redis_errors.TimeoutError):
            await pipeline.evalsha(sha, ["k"], [1])
        took = time.monotonic() - started
    finally:
        replicated.primary.resume()
    assert 0.3 + WAIT_TIMEOUT_MS / 1000 <= took < 0.3 + WAIT_TIMEOUT_MS / 1000 + 1.0
    assert await pipeline.evalsha(sha, ["k"], [2]) == [2, "k"]  # a new connection


@single_only("the single Redis has no replica here; tests/cluster/test_replica_ack.py")
async def test_a_redis_without_the_replicas_asked_for_is_named_at_start(
    redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path, redis={"replicas_acked": 1})
    store = Store(connect_single(redis_url, 2.0), settings)
    try:
        assert await masters_short_of_replicas(store) == ["redis: 0 of 1"]
        unasked = Store(store.redis, make_settings(redis_url, tmp_path))
        assert await masters_short_of_replicas(unasked) == []
    finally:
        await store.close()
