"""kill -9 of the master that owns a busy stream (and its streamer) while gifts pour
in through two workers with `replicas_acked = 1`: its replica takes over, every
acknowledged gift is in the balances, the boards and the history, viewers miss
nothing without being told, and the workers heal without a restart."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from gifting_server.ledger import keys
from gifting_server.ledger.store import RedisClient, connect
from gifting_server.local_cluster import LocalCluster
from tests.cluster.test_cluster_gifts import pending_transfers
from tests.cluster.test_cluster_hub import assert_no_silent_gap, seen
from tests.factories import token
from tests.faults import assert_reconciled, buy, go_live, journal, send_gift, wait_until
from tests.history import history_ids
from tests.hub.conftest import Worker, running_workers
from tests.hub.wsclient import WsClient

pytestmark = pytest.mark.cluster

CONFIG = """
[redis]
replicas_acked = 1
replicas_timeout_ms = 500

[transfers]
relay_after_ms = 500
relay_every_s = 0.2
relay_slots_per_pass = 2048
"""
GIFTERS = 10
RETRY_FOR_S = 60  # a gift refused as unavailable is sent again with its key, for so long


class Gifters:
    """Viewers sending roses one after another through both workers in turn; a gift
    answered anything but 200 is sent again with the same key until it is."""

    def __init__(self, workers: list[Worker], stream: str) -> None:
        self.workers, self.stream = workers, stream
        self.acked: dict[tuple[str, str], int] = {}
        self.refusals: Counter[int] = Counter()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        async with (
            httpx.AsyncClient(base_url=self.workers[0].url, timeout=5) as first,
            httpx.AsyncClient(base_url=self.workers[1].url, timeout=5) as second,
        ):
            await asyncio.gather(*(self.gift_on([first, second], n) for n in range(GIFTERS)))

    async def gift_on(self, clients: list[httpx.AsyncClient], n: int) -> None:
        user = f"v{n}"
        i = 0
        while not self.stop.is_set():
            key, deadline = f"k{i}", time.monotonic() + RETRY_FOR_S
            while True:
                client = clients[(i + n) % 2]
                try:
                    answer = await send_gift(client, user, key, stream_id=self.stream)
                    if answer.status_code == 200:
                        self.acked[(user, key)] = answer.json()["event_id"]
                        break
                    assert answer.status_code == 503, answer.text
                    self.refusals[answer.status_code] += 1
                except httpx.TransportError:
                    self.refusals[0] += 1
                assert time.monotonic() < deadline, f"{user} {key} never acknowledged"
                await asyncio.sleep(0.05)
            i += 1


@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.slow
async def test_a_busy_streams_master_killed_mid_load_loses_no_acknowledged_gift(
    redis_cluster: LocalCluster, cluster_url: str, tmp_path: Path
) -> None:
    stream = "busy"
    doomed = redis_cluster.master_for_key(keys.stream(stream))
    streamer = next(  # its earnings on the doomed master too
        f"t{i}" for i in range(200) if redis_cluster.master_for_key(keys.wallet(f"t{i}")) == doomed
    )
    redis = await connect(cluster_url, 5.0)
    try:
        with running_workers(cluster_url, tmp_path, 2, CONFIG) as workers:
            async with httpx.AsyncClient(base_url=workers[0].url, timeout=10) as http:
                await go_live(http, stream, streamer)
                for n in range(GIFTERS):
                    await buy(http, f"v{n}", "coins_10000")
            watchers = [await WsClient.open(w.url, token(f"w{i}")) for i, w in enumerate(workers)]
            for watcher in watchers:
                await watcher.subscribe(stream)
            gifters = Gifters(workers, stream)
            sending = asyncio.create_task(gifters.run())
            try:
                await wait_until(lambda: len(gifters.acked) >= 60, 60, "gifts before the kill")
                redis_cluster.kill(doomed)
                redis_cluster.wait_for_failover(doomed)
                # With one replica per master, the promoted one has none left to wait
                # for: money writes on its slots are refused until the old master
                # rejoins as its replica.
                redis_cluster.restart(doomed)
                healed_at = len(gifters.acked)
                await wait_until(
                    lambda: len(gifters.acked) >= healed_at + 60, 60, "gifts after the failover"
                )
            finally:
                gifters.stop.set()
                await sending
            await wait_until(lambda: asyncio.ensure_future(_none_pending(redis)), 30, "the relay")

            history = await redis.xrange(keys.stream_history(stream))  # type: ignore[misc]
            final = int(history[-1][0].split("-")[0])
            for watcher in watchers:
                await watcher.events_until(lambda e: e["event_id"] >= final, timeout=30)
                history_seen = seen(watcher, stream)
                assert history_seen[0][0] == "subscribed"
                assert_no_silent_gap(history_seen[1:], since=history_seen[0][1][1])
                watcher.assert_no_traceback()
                await watcher.close()
            async with httpx.AsyncClient(base_url=workers[1].url) as http:
                assert (await http.get("/readyz")).is_success

        credited = Counter(
            (e["user"], e["key"])
            for e in await journal(redis)
            if e["type"] == "gift"  # type: ignore[arg-type]
        )
        assert max(credited.values()) == 1, "a gift credited twice"
        assert set(gifters.acked) <= set(credited), "an acknowledged gift lost"
        in_history = set(await history_ids(redis, stream))  # a batched call's: one entry
        assert set(gifters.acked.values()) <= in_history, "an acknowledged gift's event lost"
        board = await redis.zrange(keys.stream_leaderboard(stream), 0, -1, withscores=True)  # type: ignore[misc]
        given = Counter(user for user, _ in credited)
        assert {user: int(score) for user, score in board} == dict(given)
        for n in range(GIFTERS):
            coins = await redis.hget(keys.wallet(f"v{n}"), "coins")  # type: ignore[misc]
            assert int(coins) == 10_000 - given[f"v{n}"]
        await assert_reconciled(redis)  # type: ignore[arg-type]
    finally:
        await redis.aclose()


async def _none_pending(redis: RedisClient) -> bool:
    return not await pending_transfers(redis)
