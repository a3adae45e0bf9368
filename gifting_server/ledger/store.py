"""The shared handle of the ledger faces: Redis, the scripts, settings and a clock."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from redis import exceptions as redis_errors
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from gifting_server import metrics
from gifting_server.config import Settings
from gifting_server.errors import ErrorCode, GiftingError, script_error
from gifting_server.ledger import keys
from gifting_server.ledger.clock import wall_clock_ms
from gifting_server.ledger.cluster_pipeline import ClusterScriptPipeline
from gifting_server.ledger.gift_admission import GiftAdmission, one_redis
from gifting_server.ledger.gift_batch import Window
from gifting_server.ledger.pipeline import DEFAULT_TIMEOUT_S, ReplicaAck, ReplicasNotAcked
from gifting_server.ledger.scripts import Scripts
from gifting_server.ledger.slot_map import SlotMapReader
from gifting_server.ledger.streaks import RecentGifts
from gifting_server.ledger.under_way import UnderWay
from gifting_server.redis_topology import RedisUnreachable, Topology, detect_async

if TYPE_CHECKING:
    from gifting_server.ledger.stream_settings import MessageSettings

T = TypeVar("T")
RedisClient = Redis | RedisCluster


async def connect(url: str, timeout_s: float, *, decode_responses: bool = True) -> RedisClient:
    """A client of the Redis at `url`: a `RedisCluster` when it is a node of a cluster
    (any node will do), else a `Redis` (`connect_single`). Either fails its calls
    after `timeout_s` instead of hanging, and never sends a call that timed out twice.

    The topology is read once, here. A Redis that does not answer yet is taken for a
    single one, as before clusters were known: its calls fail until it is up."""
    try:
        topology = await detect_async(url, timeout_s)
    except RedisUnreachable:
        topology = Topology.SINGLE
    if topology is Topology.CLUSTER:
        return await connect_cluster(url, timeout_s, decode_responses=decode_responses)
    return connect_single(url, timeout_s, decode_responses=decode_responses)


async def connect_cluster(
    url: str, timeout_s: float, *, decode_responses: bool = True
) -> RedisCluster:
    """A cluster client with its slot map loaded. A command whose node refused or
    dropped the connection is sent once more after the map is reloaded (the slot may
    have a new master); one that timed out is not (`_ClusterClient`). MOVED and ASK
    are followed by redis-py; the script calls have their own path (`cluster_pipeline`)."""
    client = _ClusterClient.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
        max_connections=256,
        decode_responses=decode_responses,
        retry=Retry(NoBackoff(), 1),
    )
    try:
        await client.initialize()
    except BaseException:
        await client.aclose()
        raise
    return client


class _ClusterClient(RedisCluster):
    # redis-py also retries a TimeoutError: a hung node would cost each call twice
    # the timeout, and a call that may have run would run again.
    ERRORS_ALLOW_RETRY = (  # type: ignore[assignment]  # redis-py types the tuple's shape
        redis_errors.ConnectionError,
        redis_errors.ClusterDownError,
        redis_errors.SlotNotCoveredError,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        budget_s = float(kwargs.get("socket_timeout") or DEFAULT_TIMEOUT_S)
        self.slot_map = SlotMapReader(self._initialize_now, budget_s)
        self._last_failed_node: str | None = None

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> _ClusterClient:
        """After a failed call redis-py reads the slot map again before the next
        one: here within the call's timeout, one reading shared by the calls waiting
        for it, not one after the other (`slot_map.py`)."""
        if self._initialize:
            self._last_failed_node = last_failed_node_name
            await self.slot_map.read()
        return self

    async def _initialize_now(self) -> None:
        await super().initialize(last_failed_node_name=self._last_failed_node)


def connect_single(url: str, timeout_s: float, *, decode_responses: bool = True) -> Redis:
    """A client whose calls fail after `timeout_s` instead of hanging when Redis is gone.

    A burst of more concurrent calls than connections waits for a free one (up to
    the same timeout) rather than failing at once. A call on a connection Redis
    closed (it restarted) is retried once on a new one, never a call that timed out:
    every script is idempotent by its key, and a hung Redis must not cost twice."""
    pool = BlockingConnectionPool.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        health_check_interval=30,
        max_connections=256,
        timeout=timeout_s,
        decode_responses=decode_responses,
        retry=_RetryUnlessTimedOut(
            NoBackoff(), 1, supported_errors=(redis_errors.ConnectionError,)
        ),
    )
    return Redis.from_pool(pool)


class _RetryUnlessTimedOut(Retry):
    """Retry a call once on a new connection when Redis closed the old one, never
    when it timed out. redis-py reports a handshake that timed out on a unix socket
    (the embedded Redis) as a ConnectionError caused by the timeout: not retried."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        def retryable(error: Exception) -> bool:
            if isinstance(error.__cause__, redis_errors.TimeoutError):
                return False
            return is_retryable is None or is_retryable(error)

        return await super().call_with_retry(do, fail, retryable, with_failure_count)


@dataclass
class Store:
    redis: RedisClient
    settings: Settings
    clock: Callable[[], int] = wall_clock_ms
    scripts: Scripts = field(init=False)
    # stream → its streamer. Owners never change, so each worker remembers them.
    streamers: dict[str, str] = field(init=False, default_factory=dict)
    recent_gifts: RecentGifts = field(init=False, default_factory=RecentGifts)
    # stream → (when read, unix ms; its message settings): ledger/stream_settings.py.
    stream_settings: dict[str, tuple[int, MessageSettings]] = field(
        init=False, default_factory=dict
    )
    gifts_across_slots: bool = field(init=False)
    # This worker's gifts in flight to Redis (per master on a cluster) and per user:
    # what refuses the excess past its ceiling.
    admission: GiftAdmission = field(init=False)
    # This worker's gifts across slots under way (transfers.send_across_slots), which
    # `close` waits for; once closing, no new one starts.
    transfers_under_way: UnderWay = field(init=False, default_factory=UnderWay)
    closing: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        redis = self.settings.redis
        self.scripts = Scripts.of(
            self.redis, ReplicaAck(redis.replicas_acked, redis.replicas_timeout_ms)
        )
        pipeline = self.scripts.pipeline
        master_of = pipeline.master_of if isinstance(pipeline, ClusterScriptPipeline) else one_redis
        self.admission = GiftAdmission(self.settings.overload, master_of)
        self.sharded_events = isinstance(self.redis, RedisCluster)
        # A gift in steps, one per slot (ledger/transfers.py), instead of one script.
        self.gifts_across_slots = self.sharded_events or self.settings.gifts_across_slots
        # A payment's global record and its user's keys are in two slots on a cluster:
        # three idempotent steps instead of one script (payments.py). Settable, so that
        # one Redis can run that path too.
        self.payments_across_slots = isinstance(self.redis, RedisCluster)

    def event_channel(self, stream_id: str) -> str:
        """A script's channel argument: the stream's channel, marked for SPUBLISH on a
        cluster (`emitEvent` in lua/include/event.lua)."""
        channel = keys.stream_channel(stream_id)
        return keys.SHARDED + channel if self.sharded_events else channel

    async def close(self) -> None:
        # A gift across slots sends its next step once its last one is answered: the
        # gifts under way finish their steps first (each credited, or left in its
        # outbox for the relay by a step that failed). Then the gifts still waiting for
        # their window go now, and the calls in flight are answered, before the
        # connection closes: left to the window's timer they would be sent after the
        # close, on a connection opened again and never closed, or never once the loop
        # is gone.
        self.closing = True
        await self.transfers_under_way.ended()
        await Window.drain_all(self.scripts)
        await self.scripts.close()
        await self.redis.aclose()

    async def run_script(self, name: str, keys: list[str], args: list[Any]) -> list[Any]:
        """Run a script; a non-zero code becomes the matching `GiftingError`."""
        result = await guarded(self.scripts.run(name, keys, args))
        if result[0] != 0:
            raise script_error(int(result[0]))
        return result


async def guarded(call: Awaitable[T]) -> T:
    """Turn Redis failures into errors a client can act on (never a 500)."""
    try:
        return await call
    except ReplicasNotAcked as e:
        # The script ran on the master; its idempotency record answers the retry.
        metrics.REPLICA_SHORTFALLS.inc()
        raise GiftingError(
            ErrorCode.SERVICE_UNAVAILABLE,
            f"the write is not yet on {e.wanted} replica(s); retry with the same key",
        ) from None
    except (
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        OSError,
        # A cluster between owners of a slot (failover, migration): nothing was run.
        redis_errors.ClusterError,
        redis_errors.TryAgainError,
        redis_errors.RedisClusterException,
    ):
        raise GiftingError(
            ErrorCode.SERVICE_UNAVAILABLE, "storage is unreachable; retry with the same key"
        ) from None
    except redis_errors.ResponseError as e:
        # A script's first write is its history XADD, refused when the stream's meta
        # was restored behind its history: nothing was written. A key of another type,
        # or a platform account or held bucket that is no integer, can only be planted
        # by someone with Redis access; a gift's scripts write some keys unread
        # (docs/performance.md), so such a key may fail one after its first write.
        text = str(e)
        if "equal or smaller than the target stream top" in text:
            raise GiftingError(
                ErrorCode.STORAGE_CORRUPT,
                "the stream's history is ahead of its state; nothing was changed",
            ) from None
        if "WRONGTYPE" in text or "hash value is not an integer" in text:
            raise GiftingError(
                ErrorCode.STORAGE_CORRUPT,
                "a storage key holds an unexpected type or value; "
                "`gifting-server reconcile` names it",
            ) from None
        # A Redis demoted to a replica (REPLICAOF, a failover that left this client on
        # the old master) refuses a script at its first write: as with OOM below, a
        # script has made every check by then, and its retry is answered by its record
        # if an earlier step of it was written elsewhere. redis-py raises ReadOnlyError
        # only for the bare reply; a script's error comes as "user_script:N: READONLY".
        if isinstance(e, redis_errors.ReadOnlyError) or "READONLY You can't write" in text:
            raise GiftingError(
                ErrorCode.SERVICE_UNAVAILABLE,
                "storage is read-only (a replica); retry with the same key",
            ) from None
        # redis-py strips the "OOM" prefix when it raises OutOfMemoryError. A script is
        # refused at its first write, and every script writes only after its last check.
        if isinstance(e, redis_errors.OutOfMemoryError) or "OOM" in str(e):
            raise GiftingError(
                ErrorCode.SERVICE_UNAVAILABLE, "storage is full; nothing was changed"
            ) from None
        raise


async def masters_short_of_replicas(store: Store) -> list[str]:
    """The masters with fewer connected replicas than `[redis] replicas_acked` asks
    for, as "<master>: <n> of <wanted>": every money write they take would wait out
    `replicas_timeout_ms` and fail. Empty when none is asked for."""
    wanted = store.settings.redis.replicas_acked
    if wanted == 0:
        return []
    if isinstance(store.redis, RedisCluster):
        answers = await store.redis.info("replication", target_nodes=RedisCluster.PRIMARIES)
        by_node = answers if isinstance(answers, dict) else {}
    else:
        by_node = {"redis": await store.redis.info("replication")}
    short = []
    for node, info in sorted(by_node.items()):
        connected = int(info.get("connected_slaves", 0)) if isinstance(info, dict) else 0
        if connected < wanted:
            short.append(f"{node}: {connected} of {wanted}")
    return short
