"""Script calls on the local Redis Cluster: routed to the master of their slot, one
pipelined connection per master, following MOVED, ASK, NOSCRIPT and a failover."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import redis
from redis import exceptions as redis_errors
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger.cluster_pipeline import ClusterScriptPipeline, CrossSlotCall
from gifting_server.ledger.keys import SLOTS, outbox_of_slot
from gifting_server.ledger.pipeline import NotSent, ReplicaAck
from gifting_server.ledger.store import connect_cluster, guarded
from gifting_server.local_cluster import LocalCluster, NodeInfo
from tests.faults import wait_until

pytestmark = pytest.mark.cluster

TIMEOUT_S = 1.0
ECHO = "return {tonumber(ARGV[1]), KEYS[1]}"
INCR = "return redis.call('INCRBY', KEYS[1], ARGV[1])"
SOURCES = {hashlib.sha1(s.encode()).hexdigest(): s for s in (ECHO, INCR)}
ECHO_SHA, INCR_SHA = SOURCES
# A hung master's pause: past what the tests that pause one wait for, short enough to wait
# out (Redis 7.0 holds CLIENT UNPAUSE itself until the pause is over).
PAUSE_MS = 4000


@pytest.fixture
async def client(cluster_url: str) -> AsyncIterator[RedisCluster]:
    cluster = await connect_cluster(cluster_url, TIMEOUT_S)
    yield cluster
    await cluster.aclose()


@pytest.fixture
def killed(redis_cluster: LocalCluster) -> Iterator[list[NodeInfo]]:
    """Nodes a test kills; they rejoin after it (as replicas of their successors)."""
    nodes: list[NodeInfo] = []
    yield nodes
    for node in nodes:
        redis_cluster.restart(node)


@pytest.fixture
async def pipeline(client: RedisCluster) -> AsyncIterator[ClusterScriptPipeline]:
    pipeline = ClusterScriptPipeline(client, SOURCES)
    yield pipeline
    await pipeline.close()


def masters(cluster: LocalCluster) -> list[NodeInfo]:
    return [n for n in cluster.nodes() if n.role == "master" and not n.failed]


def node_client(node: NodeInfo) -> redis.Redis:
    return redis.Redis(host=node.host, port=node.port, decode_responses=True)


async def test_concurrent_calls_on_every_master_each_get_their_own_reply(
    redis_cluster: LocalCluster, pipeline: ClusterScriptPipeline
) -> None:
    keys = [f"{{u:{i}}}:wallet" for i in range(600)]
    nodes = masters(redis_cluster)
    owners = {n.port for key in keys for n in nodes if n.serves(key_slot(key.encode()))}
    assert len(owners) == 3  # the keys span every master

    replies = await asyncio.gather(
        *(pipeline.evalsha(ECHO_SHA, [k], [i]) for i, k in enumerate(keys))
    )

    assert replies == [[i, key] for i, key in enumerate(keys)]
    assert sorted(port for _, port in pipeline.connected_nodes()) == sorted(owners)  # one each


async def test_a_script_missing_on_a_node_is_loaded_there_and_the_call_answered(
    redis_cluster: LocalCluster, pipeline: ClusterScriptPipeline
) -> None:
    # A flushed cluster: no master has ever seen INCR.
    keys = ["{u:carol}:n", "{u:alice}:n", "{u:dave}:n"]  # one per master
    assert len({redis_cluster.master_for_key(k).port for k in keys}) == 3

    assert await asyncio.gather(*(pipeline.evalsha(INCR_SHA, [k], [2]) for k in keys)) == [2] * 3

    for node in masters(redis_cluster):
        assert node_client(node).script_exists(INCR_SHA) == [True]


async def test_a_script_its_connected_master_lost_is_loaded_and_run_once(
    redis_cluster: LocalCluster, pipeline: ClusterScriptPipeline
) -> None:
    """NOSCRIPT on a connection already open (a restarted node, a promoted replica, a
    flushed cache): the call ran nothing, so it is sent again once the script is
    loaded, and runs once. Eight calls at once, so some share a write."""
    key = "{u:flushed}:n"
    node = node_client(redis_cluster.master_for_key(key))
    assert await pipeline.evalsha(INCR_SHA, [key], [0]) == 0  # connected, loaded
    node.script_flush()
    try:
        replies = await asyncio.gather(*(pipeline.evalsha(INCR_SHA, [key], [1]) for _ in range(8)))
        assert sorted(replies) == list(range(1, 9))
        assert node.get(key) == "8"
    finally:
        node.delete(key)


async def test_an_unknown_script_still_raises_noscript(pipeline: ClusterScriptPipeline) -> None:
    with pytest.raises(redis_errors.NoScriptError):
        await pipeline.evalsha("0" * 40, ["{u:alice}:n"], [])


async def test_keys_in_two_slots_are_refused_before_anything_is_sent(
    pipeline: ClusterScriptPipeline,
) -> None:
    with pytest.raises(CrossSlotCall, match="one cluster slot"):
        await pipeline.evalsha(ECHO_SHA, ["{u:alice}:wallet", "{u:bob}:wallet"], [1])
    assert pipeline.connected_nodes() == []
    # Keys with one hash tag share a slot, whatever else they hold.
    assert await pipeline.evalsha(ECHO_SHA, ["{u:alice}:a", "{u:alice}:b"], [1]) == [
        1,
        "{u:alice}:a",
    ]


def set_slot(cluster: LocalCluster, port: int, slot: int, *state: str) -> None:
    node_client(cluster.node(port)).execute_command("CLUSTER", "SETSLOT", slot, *state)


async def test_a_migrating_slot_is_followed_by_ask_then_by_moved(
    redis_cluster: LocalCluster, pipeline: ClusterScriptPipeline
) -> None:
    key = "{s:migrating}:n"
    slot = key_slot(key.encode())
    source = redis_cluster.master_for_slot(slot)
    target = next(n for n in masters(redis_cluster) if n.port != source.port)
    assert await pipeline.evalsha(INCR_SHA, [key], [40]) == 40  # INCR loaded on source only
    try:
        set_slot(redis_cluster, target.port, slot, "IMPORTING", source.node_id)
        set_slot(redis_cluster, source.port, slot, "MIGRATING", target.node_id)
        node_client(source).migrate(target.host, target.port, [key], 0, 5000)

        # The source no longer has the key: ASK → ASKING + the call on the target, which
        # never saw the script (NOSCRIPT → loaded there, asked again).
        assert await pipeline.evalsha(INCR_SHA, [key], [1]) == 41
        assert node_client(target).script_exists(INCR_SHA) == [True]
        assert (target.host, target.port) in pipeline.connected_nodes()

        for node in masters(redis_cluster):
            set_slot(redis_cluster, node.port, slot, "NODE", target.node_id)

        # The move is complete; the pipeline's slot map still names the source: MOVED.
        assert await pipeline.evalsha(INCR_SHA, [key], [1]) == 42
        assert (target.host, target.port) in pipeline.connected_nodes()
        assert await pipeline.evalsha(INCR_SHA, [key], [1]) == 43  # the map now knows
    finally:
        node_client(target).delete(key)
        set_slot(redis_cluster, source.port, slot, "IMPORTING", target.node_id)
        set_slot(redis_cluster, target.port, slot, "MIGRATING", source.node_id)
        for node in masters(redis_cluster):
            set_slot(redis_cluster, node.port, slot, "NODE", source.node_id)
        await asyncio.to_thread(redis_cluster.wait_ready)


async def test_many_plain_commands_are_answered_in_order_across_masters_and_redirections(
    redis_cluster: LocalCluster, pipeline: ClusterScriptPipeline
) -> None:
    """`calls` (the relay's reads): the commands on known, connected masters go out at
    once; those the cluster redirects (ASK during a migration, MOVED after it) or whose
    master is not connected yet follow the whole route; every answer in its place."""
    keys = [f"{{u:calls{i}}}:n" for i in range(300)]
    moving = keys[7]
    slot = key_slot(moving.encode())
    source = redis_cluster.master_for_slot(slot)
    target = next(n for n in masters(redis_cluster) if n.port != source.port)
    # Connected to the source only: the other masters' commands take the whole route.
    assert await pipeline.call(moving, ("SET", moving, "here")) == "OK"
    assert pipeline.connected_nodes() == [(source.host, source.port)]

    def commands() -> list[tuple[int, tuple[str, ...]]]:
        return [(key_slot(key.encode()), ("INCR", key)) for key in keys]

    try:
        assert await pipeline.call(moving, ("DEL", moving)) == 1
        set_slot(redis_cluster, target.port, slot, "IMPORTING", source.node_id)
        set_slot(redis_cluster, source.port, slot, "MIGRATING", target.node_id)
        # The key is not on the source: ASK, to the target, which never had a connection.
        assert await pipeline.calls(commands()) == [1] * len(keys)

        for node in masters(redis_cluster):
            set_slot(redis_cluster, node.port, slot, "NODE", target.node_id)
        # The pipeline's map still names the source: MOVED, then the map is read again.
        assert await pipeline.calls(commands()) == [2] * len(keys)
        assert await pipeline.calls([(slot, ("GET", moving)), (slot, ("NOSUCHCOMMAND",))]) == [
            "2",
            AnyRedisError(),
        ]
    finally:
        node_client(target).delete(moving)
        set_slot(redis_cluster, source.port, slot, "IMPORTING", target.node_id)
        set_slot(redis_cluster, target.port, slot, "MIGRATING", source.node_id)
        for node in masters(redis_cluster):
            set_slot(redis_cluster, node.port, slot, "NODE", source.node_id)
        await asyncio.to_thread(redis_cluster.wait_ready)
        client = redis.RedisCluster(host=source.host, port=source.port)
        client.delete(*keys)
        client.close()


async def test_many_commands_on_a_hung_master_fail_together_within_one_deadline(
    redis_cluster: LocalCluster, pipeline: ClusterScriptPipeline
) -> None:
    """`calls` whose master hangs and whose connection to it was already lost (the
    relay's pass before timed out) take the whole route together, each within the one
    deadline: not one deadline after the other, which for the relay's thousand outboxes
    a pass would be most of an hour. The other masters' commands are answered."""
    hung = masters(redis_cluster)[0]
    hung_slots = [slot for slot in range(SLOTS) if hung.serves(slot)][:6]
    other_slot = next(slot for slot in range(SLOTS) if not hung.serves(slot))
    reads = [(slot, ("ZCARD", outbox_of_slot(slot))) for slot in [*hung_slots, other_slot]]
    assert await pipeline.calls(reads) == [0] * len(reads)  # every master connected
    node = node_client(hung)
    node.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
    try:
        with pytest.raises(redis_errors.TimeoutError):  # its connection dropped
            await pipeline.call(outbox_of_slot(hung_slots[0]), reads[0][1])
        assert (hung.host, hung.port) not in pipeline.connected_nodes()

        started = time.monotonic()
        answers = await pipeline.calls(reads)
        elapsed = time.monotonic() - started
    finally:
        node.execute_command("CLIENT", "UNPAUSE")  # answered once the pause is over

    assert elapsed < pipeline.deadline_s + 0.5
    assert [type(answer) for answer in answers[:-1]] == [redis_errors.TimeoutError] * 6
    assert answers[-1] == 0


HELD_KEY = "{u:alice}:n"


@asynccontextmanager
async def held_behind_a_wait(
    cluster: LocalCluster, client: RedisCluster, key: str
) -> AsyncIterator[ClusterScriptPipeline]:
    """A pipeline with `replicas_acked` whose connection to `key`'s master wrote a script
    call and its WAIT, and waits for the WAIT's answer on a master now paused: a call
    made in the block is held unwritten behind it. On leaving, that first call has
    failed with a timeout (it may have run: never sent again), and the master goes on."""
    pipeline = ClusterScriptPipeline(client, SOURCES, ReplicaAck(1, 500))
    master = cluster.master_for_key(key)
    node = node_client(master)
    try:
        assert await pipeline.evalsha(ECHO_SHA, [key], [1]) == [1, key]  # connected
        node.execute_command("CLIENT", "PAUSE", PAUSE_MS, "ALL")
        try:
            written = asyncio.ensure_future(pipeline.evalsha(ECHO_SHA, [key], [2]))
            protocol = pipeline._connections[(master.host, master.port)]
            await wait_until(lambda: protocol.replicas_pending, 5, "the WAIT written")
            yield pipeline
            with pytest.raises(redis_errors.TimeoutError):
                await written
        finally:
            node.execute_command("CLIENT", "UNPAUSE")  # answered once the pause is over
    finally:
        await pipeline.close()


async def test_a_call_held_behind_a_wait_on_a_hung_master_fails_within_its_deadline(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    """With `replicas_acked`, a call made while its connection's WAIT is pending waits
    unwritten. When the master hangs, the connection is dropped at its timeout and that
    call, never sent, may go again, but only within what is left of its one deadline
    (`request_timeout_s` plus twice `replicas_timeout_ms`): not a whole deadline more."""
    async with held_behind_a_wait(redis_cluster, client, HELD_KEY) as pipeline:
        started = time.monotonic()
        with pytest.raises(redis_errors.TimeoutError):
            await pipeline.evalsha(ECHO_SHA, [HELD_KEY], [3])
        elapsed = time.monotonic() - started

    assert elapsed < pipeline.deadline_s + 0.4


async def test_commands_held_behind_a_wait_on_a_hung_master_fail_within_the_deadline(
    redis_cluster: LocalCluster, client: RedisCluster
) -> None:
    """`calls` (the relay's reads) share each master's connection with the scripts: held
    behind a script's WAIT when the master hangs, dropped unsent with the connection,
    they go the whole way within what is left of one deadline, as a script call does."""
    slot = key_slot(HELD_KEY.encode())
    async with held_behind_a_wait(redis_cluster, client, HELD_KEY) as pipeline:
        started = time.monotonic()
        answers = await pipeline.calls([(slot, ("GET", HELD_KEY))] * 3)
        elapsed = time.monotonic() - started

    assert [type(answer) for answer in answers] == [redis_errors.TimeoutError] * 3
    assert elapsed < pipeline.deadline_s + 0.4


async def test_many_commands_across_a_failover_are_answered_in_place_and_run_once(
    redis_cluster: LocalCluster, pipeline: ClusterScriptPipeline, killed: list[NodeInfo]
) -> None:
    """`calls` while a master is killed and its replica takes over: each pass is answered
    within the timeout, the dead master's commands fail (never written, or written to a
    dead socket) until the replica serves them, the others' only while the cluster is
    down, and each command ran at most once: the counters end at one per pass that
    answered them, the last answers in their places."""
    victim = masters(redis_cluster)[0]
    victim_slots = [slot for slot in range(SLOTS) if victim.serves(slot)][:4]
    others = [slot for slot in range(SLOTS) if not victim.serves(slot)]
    other_slots = [others[0], others[-1]]  # one on each other master
    counters = [(slot, outbox_of_slot(slot).replace(":outbox", ":n")) for slot in victim_slots]
    counters += [(slot, outbox_of_slot(slot).replace(":outbox", ":n")) for slot in other_slots]
    commands = [(slot, ("INCR", key)) for slot, key in counters]
    assert await pipeline.calls(commands) == [1] * len(commands)
    assert node_client(victim).wait(1, 5000) == 1  # the replica has the first increments

    redis_cluster.kill(victim)
    killed.append(victim)
    answered = [1] * len(commands)
    deadline = time.monotonic() + 30
    while True:
        started = time.monotonic()
        answers = await pipeline.calls(commands)
        assert time.monotonic() - started < TIMEOUT_S + 0.5  # never hangs
        for i, answer in enumerate(answers):
            if isinstance(answer, int):
                answered[i] += 1
            elif i < len(victim_slots):  # written to a dead socket, never written, refused
                refusals = (redis_errors.ConnectionError, redis_errors.ClusterDownError)
                assert isinstance(answer, refusals), answer
            else:  # the others refuse while a slot has no master: nothing ran
                assert isinstance(answer, redis_errors.ClusterDownError), answer
        if all(isinstance(answer, int) for answer in answers):
            break
        assert time.monotonic() < deadline, "no replica took over"
        await asyncio.sleep(0.1)

    survivor = masters(redis_cluster)[0]
    cluster = redis.RedisCluster(host=survivor.host, port=survivor.port)
    try:
        values = [int(cluster.get(key)) for _, key in counters]
        cluster.delete(*(key for _, key in counters))
    finally:
        cluster.close()
    assert values == answered == answers


class AnyRedisError:
    """Equal to any error Redis answered (an error among `calls`' answers)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, redis_errors.ResponseError)


async def test_a_killed_master_fails_calls_as_retryable_until_its_replica_serves_them(
    redis_cluster: LocalCluster, pipeline: ClusterScriptPipeline, killed: list[NodeInfo]
) -> None:
    key = "{u:alice}:wallet"
    old_master = redis_cluster.master_for_key(key)
    assert await pipeline.evalsha(ECHO_SHA, [key], [1]) == [1, key]

    redis_cluster.kill(old_master)
    killed.append(old_master)
    failed = 0
    deadline = time.monotonic() + 30
    while True:
        started = time.monotonic()
        try:
            reply = await guarded(pipeline.evalsha(ECHO_SHA, [key], [2]))
        except GiftingError as e:
            assert e.code is ErrorCode.SERVICE_UNAVAILABLE
            failed += 1
        else:
            break
        finally:
            assert time.monotonic() - started < TIMEOUT_S + 0.5  # never hangs
        assert time.monotonic() < deadline, "no replica took over"
        await asyncio.sleep(0.1)

    assert reply == [2, key]  # on the promoted replica, which loaded the script
    assert failed > 0
    # Every node's view agrees a little after the first one answered as master.
    new_master = await asyncio.to_thread(redis_cluster.wait_for_failover, old_master)
    assert (new_master.host, new_master.port) in pipeline.connected_nodes()
    assert node_client(new_master).script_exists(ECHO_SHA) == [True]


async def test_a_call_in_flight_when_its_master_dies_fails_and_is_not_sent_again(
    redis_cluster: LocalCluster, pipeline: ClusterScriptPipeline, killed: list[NodeInfo]
) -> None:
    key = "{u:alice}:n"
    old_master = redis_cluster.master_for_key(key)
    assert await pipeline.evalsha(INCR_SHA, [key], [1]) == 1
    node_client(old_master).execute_command("CLIENT", "PAUSE", 10_000, "ALL")
    in_flight = asyncio.ensure_future(pipeline.evalsha(INCR_SHA, [key], [1]))
    await asyncio.sleep(0.2)  # written; the node holds it unanswered
    started = time.monotonic()
    redis_cluster.kill(old_master)
    killed.append(old_master)

    with pytest.raises(redis_errors.ConnectionError) as lost:
        await in_flight
    # It may have run before the kill: it is not sent again, not even to the replica.
    assert not isinstance(lost.value, NotSent)
    assert time.monotonic() - started < TIMEOUT_S + 0.5
