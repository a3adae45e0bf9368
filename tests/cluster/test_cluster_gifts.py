"""Gifts on a Redis Cluster: the steps of a transfer across slots (ledger/transfers.py)
on real masters, under concurrency, spread over the shards, and end to end."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
import redis

from gifting_server.auth import Role
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, wallet
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import RedisClient, Store, connect
from gifting_server.local_cluster import LocalCluster
from tests.conftest import ServerThread, make_settings
from tests.factories import auth, fund, live_stream, token, viewer
from tests.history import history_events
from tests.hub.wsclient import WsClient

pytestmark = pytest.mark.cluster

FAST = {"gift_rate_per_s": 100_000, "gift_burst": 100_000}


@pytest.fixture
async def store(cluster_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    settings = make_settings(cluster_url, tmp_path, limits=FAST)
    store = Store(await connect(cluster_url, 5.0), settings)
    yield store
    await store.close()


def one_per_master(cluster: LocalCluster, key_of: Callable[[str], str], prefix: str) -> list[str]:
    """Ids, one whose key (`key_of(id)`) lives on each master."""
    by_master: dict[int, str] = {}
    for n in range(1000):
        candidate = f"{prefix}{n}"
        by_master.setdefault(cluster.master_for_key(key_of(candidate)).port, candidate)
        if len(by_master) == 3:
            return sorted(by_master.values())
    raise AssertionError("no id found on every master")


async def pending_transfers(redis: RedisClient) -> list[str]:
    """Every gift transfer in an outbox of any master: debited, not yet credited."""
    outboxes = [key async for key in redis.scan_iter(match=keys.OUTBOX_PATTERN)]
    return [member for outbox in outboxes for member in await redis.zrange(outbox, 0, -1)]


async def assert_reconciled(store: Store) -> None:
    report = await reconcile(store.redis, store.settings.economy.creator_share_bps)
    assert report.ok, report.format()


def evalsha_calls(cluster: LocalCluster) -> dict[int, int]:
    """Script calls each master ran since its statistics were reset."""
    calls = {}
    for node in cluster.nodes():
        if node.role != "master":
            continue
        client = redis.Redis(host=node.host, port=node.port)
        stats = client.info("commandstats")
        client.close()
        calls[node.port] = int(stats.get("cmdstat_evalsha", {}).get("calls", 0))
    return calls


def reset_stats(cluster: LocalCluster) -> None:
    for node in cluster.nodes():
        client = redis.Redis(host=node.host, port=node.port)
        client.config_resetstat()
        client.close()


async def test_200_gifts_succeed_exactly_as_far_as_the_balances_cover(
    store: Store, redis_cluster: LocalCluster
) -> None:
    """20 viewers with 100 coins each try 12 gifts of 10 coins, all at once, to
    streamers and streams on every master: exactly 200 go through."""
    streamers = one_per_master(redis_cluster, keys.wallet, "t")
    streams = one_per_master(redis_cluster, keys.stream, "s")
    for streamer, stream in zip(streamers, streams, strict=True):
        await live_stream(store, stream, streamer)
    viewers = [f"v{n}" for n in range(20)]
    await asyncio.gather(*(fund(store, user, "coins_100") for user in viewers))
    hearts = store.settings.gift("finger_heart")  # 5 coins, sent 2 at a time
    assert hearts is not None

    async def attempt(user: str, n: int) -> str:
        stream = streams[n % 3]
        try:
            await gifts.run_send_gift(store, viewer(user), stream, hearts, 2, f"g{n}")
        except GiftingError as e:
            return e.code.name
        return stream

    outcomes = Counter(
        await asyncio.gather(*(attempt(user, n) for user in viewers for n in range(12)))
    )
    assert outcomes[ErrorCode.INSUFFICIENT_FUNDS.name] == 40
    assert sum(outcomes[s] for s in streams) == 200
    for user in viewers:
        assert (await wallet.read_wallet(store, user))["coins"] == 0
    for stream in streams:
        history = await history_events(store.redis, stream)
        assert sum(e["kind"] == "gift" and e["count"] == 2 for e in history) == outcomes[stream]
    assert await pending_transfers(store.redis) == []
    await assert_reconciled(store)


async def test_gift_scripts_spread_over_every_master(
    store: Store, redis_cluster: LocalCluster
) -> None:
    """100 streams, 2,000 viewers' wallets: every master runs gift scripts and the
    busiest runs at most 45% of them."""
    streams = [f"s{n}" for n in range(100)]
    viewers = [f"v{n}" for n in range(2000)]
    semaphore = asyncio.Semaphore(64)

    async def limited(call: Callable[[], object]) -> None:
        async with semaphore:
            await call()  # type: ignore[misc]

    await asyncio.gather(*(live_stream(store, s, f"t{n}") for n, s in enumerate(streams)))
    await asyncio.gather(*(limited(lambda u=u: fund(store, u, "coins_100")) for u in viewers))
    reset_stats(redis_cluster)
    rose = store.settings.gift("rose")
    assert rose is not None
    await asyncio.gather(
        *(
            limited(
                lambda n=n, u=u: gifts.run_send_gift(
                    store, viewer(u), streams[n % 100], rose, 1, f"k{n}"
                )
            )
            for n, u in enumerate(viewers)
        )
    )
    calls = evalsha_calls(redis_cluster)
    total = sum(calls.values())
    assert total >= 4 * len(viewers)  # gate, debit and two credits per gift
    assert all(count > 0 for count in calls.values()), calls
    busiest = max(calls.values()) / total
    assert busiest <= 0.45, f"busiest master ran {busiest:.0%} of the script calls: {calls}"
    assert await pending_transfers(store.redis) == []
    await assert_reconciled(store)


async def test_a_gift_over_http_reaches_the_viewers_of_another_worker(
    store: Store, cluster_url: str, tmp_path: Path
) -> None:
    streamer = "tina"
    await live_stream(store, "live1", streamer)
    await fund(store, "alice", "coins_100")
    settings = make_settings(cluster_url, tmp_path)
    with ServerThread(settings) as first, ServerThread(settings) as second:
        async with await WsClient.open(second.url, token("bob", Role.VIEWER)) as watcher:
            assert (await watcher.subscribe("live1"))["recovered"] is True
            async with httpx.AsyncClient(base_url=first.url) as client:
                for n in range(3):
                    body = {"gift_id": "rose", "count": 1, "idempotency_key": f"h{n}"}
                    answer = await client.post(
                        "/v1/streams/live1/gifts", json=body, headers=auth("alice")
                    )
                    assert answer.status_code == 200, answer.text
                repeat = await client.post(
                    "/v1/streams/live1/gifts",
                    json={"gift_id": "rose", "count": 1, "idempotency_key": "h2"},
                    headers=auth("alice"),
                )
                assert repeat.json() == answer.json()
            events = await watcher.events_until(lambda e: e.get("combo") == 3)
    assert [e["combo"] for e in events if e["kind"] == "gift"] == [1, 2, 3]
    assert (await wallet.read_wallet(store, "alice"))["coins"] == 97
    await assert_reconciled(store)
