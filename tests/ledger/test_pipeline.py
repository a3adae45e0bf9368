"""The script pipeline: concurrent calls share a connection and each gets its own
reply; Redis losing the script, the connection or its voice is survived."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from gifting_server.ledger.pipeline import ScriptPipeline
from gifting_server.ledger.store import connect_single
from tests.redis_process import RedisProcess
from tests.topology import single_only

pytestmark = single_only(
    "ScriptPipeline is the single Redis's pipeline; the cluster's, one per master, is "
    "tested in tests/cluster/test_cluster_pipeline.py"
)

ECHO = "return {tonumber(ARGV[1]), KEYS[1]}"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[Redis]:
    redis = connect_single(redis_url, 1.0)
    yield redis
    await redis.aclose()


async def test_concurrent_calls_each_get_their_own_reply_over_one_connection(
    client: Redis,
) -> None:
    sha = await client.script_load(ECHO)
    pipeline = ScriptPipeline(client)
    try:
        before = int((await client.info("clients"))["connected_clients"])
        replies = await asyncio.gather(*(pipeline.evalsha(sha, [f"k{i}"], [i]) for i in range(500)))
        assert replies == [[i, f"k{i}"] for i in range(500)]
        assert int((await client.info("clients"))["connected_clients"]) == before + 1
    finally:
        await pipeline.close()


async def test_the_calls_of_one_loop_pass_reach_redis_in_one_write(client: Redis) -> None:
    sha = await client.script_load(ECHO)
    pipeline = ScriptPipeline(client)
    try:
        await pipeline.evalsha(sha, ["k"], [0])  # connected
        before = int((await client.info("stats"))["total_reads_processed"])
        replies = await asyncio.gather(*(pipeline.evalsha(sha, [f"k{i}"], [i]) for i in range(100)))
        after = int((await client.info("stats"))["total_reads_processed"])
        assert replies == [[i, f"k{i}"] for i in range(100)]
        # Redis read the 100 calls (~9 kB) at once; the other read is the second INFO.
        assert after - before == 2
    finally:
        await pipeline.close()


async def test_a_script_error_fails_only_its_own_call(client: Redis) -> None:
    sha = await client.script_load("return redis.call('INCR', KEYS[1])")
    await client.set("text", "not a number")
    pipeline = ScriptPipeline(client)
    try:
        good, bad, good_again = await asyncio.gather(
            pipeline.evalsha(sha, ["n1"], []),
            pipeline.evalsha(sha, ["text"], []),
            pipeline.evalsha(sha, ["n2"], []),
            return_exceptions=True,
        )
        assert (good, good_again) == (1, 1)
        assert isinstance(bad, redis_errors.ResponseError)
    finally:
        await pipeline.close()


async def test_an_unknown_script_raises_noscript(client: Redis) -> None:
    pipeline = ScriptPipeline(client)
    try:
        with pytest.raises(redis_errors.NoScriptError):
            await pipeline.evalsha("0" * 40, [], [])
    finally:
        await pipeline.close()


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[tuple[RedisProcess, ScriptPipeline, str]]:
    """A Redis of this test's own (to stop and kill), a pipeline to it and ECHO's sha,
    with one call already answered over the pipeline's connection."""
    redis = RedisProcess(tmp_path / "redis")
    redis.start()
    client = connect_single(redis.url, 0.5)
    pipeline = ScriptPipeline(client)
    try:
        sha = await client.script_load(ECHO)
        assert await pipeline.evalsha(sha, ["k"], [1]) == [1, "k"]
        yield redis, pipeline, sha
    finally:
        await pipeline.close()
        await client.aclose()
        redis.stop()


async def test_a_hung_redis_times_out_the_calls_in_flight_then_recovers(
    own_redis: tuple[RedisProcess, ScriptPipeline, str],
) -> None:
    redis, pipeline, sha = own_redis
    redis.suspend()
    try:
        with pytest.raises(redis_errors.TimeoutError):
            await pipeline.evalsha(sha, ["k"], [2])
    finally:
        redis.resume()
    assert await pipeline.evalsha(sha, ["k"], [3]) == [3, "k"]  # a new connection


async def test_a_restarted_redis_fails_the_calls_in_flight_and_the_next_call_reconnects(
    own_redis: tuple[RedisProcess, ScriptPipeline, str],
) -> None:
    redis, pipeline, sha = own_redis
    redis.kill()
    with pytest.raises(redis_errors.ConnectionError):
        await pipeline.evalsha(sha, ["k"], [2])
    redis.start()
    with pytest.raises(redis_errors.NoScriptError):  # a fresh Redis: the pipeline is back
        await pipeline.evalsha(sha, ["k"], [3])


async def test_many_commands_to_a_redis_that_is_down_each_answer_its_error(
    own_redis: tuple[RedisProcess, ScriptPipeline, str],
) -> None:
    """`calls` answers each command's error as a value, even when no connection can be
    made: the relay turns such an answer into `service_unavailable` (`store.guarded`),
    a warning line a pass, where a raised error would be a traceback a pass."""
    redis, pipeline, _ = own_redis
    redis.kill()
    with pytest.raises(redis_errors.ConnectionError):  # the connection it had is lost
        await pipeline.call("k", ("GET", "k"))

    answers = await pipeline.calls([(0, ("GET", "a")), (0, ("GET", "b"))])

    assert len(answers) == 2
    assert all(isinstance(answer, redis_errors.ConnectionError) for answer in answers)
