"""kill -9 a `gifting-server serve` worker on a Redis Cluster while gifts across slots
pour through it, at the moment each of its senders has a gift debited and not yet
credited (the streamer's master holds its writes: CLIENT PAUSE WRITE, after the
debit and the stream's credit ran on the two other masters). The client
retries some of those it got no answer for; the other worker's relay finishes the
rest. The worker credits concurrent gifts in batched calls when several of a stream
or a streamer are under way at once (ledger/transfer_batch.py), so the kill may leave
batches half done; whether it does depends on timing (the batches themselves are
pinned by tests/ledger/test_transfer_batch*.py). Every acknowledged gift is credited
exactly once, none twice, and the ledger reconciles."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path

import httpx
import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from gifting_server.ledger import keys
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import connect_cluster
from gifting_server.local_cluster import LocalCluster
from tests.faults import go_live, send_gift, wait_until
from tests.hub.conftest import running_workers
from tests.ledger.support import journal_entries

SENDERS = 12
# The senders are all carol's gifts at once: past [overload] max_in_flight_per_user
# some would be refused rate_limited before the debit this test holds them at.
ONE_SENDER = f"[overload]\nmax_in_flight_per_user = {SENDERS}\n"
GIFTS_BEFORE_KILL = 120
# The relay reads every slot's outbox within 16 passes of a second each, and takes a
# transfer once it is `[transfers] relay_after_ms` old.
RELAY_DEADLINE_S = 60


async def fund(cluster: RedisCluster, user: str, coins: int) -> None:
    """What a purchase leaves, written key by key: a payment on a cluster is not this
    test's subject (tests/cluster/test_ledger_slots.py seeds the same way)."""
    purchase = {"type": "purchase", "user": user, "payment": "e1", "package": "coins_10000"}
    await cluster.xadd(keys.journal(user), purchase | {"coins": coins, "settled": 0})
    await cluster.set(
        keys.payment_seen("e1"), f"{user}|payment.succeeded|coins_10000|{coins}|{coins}|0|0"
    )
    await cluster.hset(keys.wallet(user), mapping={"coins": coins})


def _on_three_masters(cluster: LocalCluster) -> tuple[str, str]:
    """A stream and a streamer whose keys live on the two masters carol's do not."""
    master = cluster.master_for_key
    taken = {master(keys.wallet("carol")).port}
    stream = next(
        s for s in (f"s{i}" for i in range(1, 100)) if master(keys.stream(s)).port not in taken
    )
    taken.add(master(keys.stream(stream)).port)
    streamer = next(
        t for t in (f"t{i}" for i in range(1, 100)) if master(keys.wallet(t)).port not in taken
    )
    return stream, streamer


async def _equal(value: Awaitable[int], wanted: int) -> bool:
    return await value == wanted


class Senders:
    """Viewers sending roses (1 coin) through one worker, each key once, until it dies."""

    def __init__(self, http: httpx.AsyncClient, stream: str) -> None:
        self.http = http
        self.stream = stream
        self.tried: list[str] = []
        self.acked: set[str] = set()

    async def run(self, who: int) -> None:
        for n in range(10_000):
            key = f"g{who}-{n}"
            self.tried.append(key)
            try:
                response = await send_gift(self.http, "carol", key, stream_id=self.stream)
            except httpx.TransportError:
                return  # the worker died with this gift in flight
            assert response.status_code == 200, response.text
            self.acked.add(key)


@pytest.mark.cluster
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.slow
async def test_a_worker_killed_mid_transfer_leaves_every_gift_credited_exactly_once(
    redis_cluster: LocalCluster, cluster_url: str, tmp_path: Path
) -> None:
    cluster = await connect_cluster(cluster_url, 5.0)
    with running_workers(cluster_url, tmp_path, 2, ONE_SENDER) as (doomed, survivor):
        async with (
            httpx.AsyncClient(base_url=survivor.url, timeout=10) as http,
            httpx.AsyncClient(base_url=doomed.url, timeout=10) as via_doomed,
        ):
            stream, streamer = _on_three_masters(redis_cluster)
            await go_live(http, stream, streamer)
            await fund(cluster, "carol", 10_000)
            senders = Senders(via_doomed, stream)
            sending = [asyncio.create_task(senders.run(i)) for i in range(SENDERS)]
            await wait_until(lambda: len(senders.acked) >= GIFTS_BEFORE_KILL, 30, "gifts")
            held = redis_cluster.master_for_key(keys.wallet(streamer))
            with redis.Redis(host=held.host, port=held.port) as node:
                node.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
                try:
                    outbox = keys.outbox("carol")
                    await wait_until(
                        lambda: _equal(cluster.zcard(outbox), SENDERS), 10, "debits held"
                    )
                    doomed.process.send_signal(signal.SIGKILL)
                    doomed.process.wait()
                finally:
                    node.execute_command("CLIENT", "UNPAUSE")
            await asyncio.gather(*sending)

            unanswered = [key for key in senders.tried if key not in senders.acked]
            assert len(unanswered) == SENDERS  # each sender's last, in flight
            for key in unanswered[::2]:  # a client retries half; the relay has the rest
                response = await send_gift(http, "carol", key, stream_id=stream)
                assert response.status_code == 200, response.text
                senders.acked.add(key)

            async def outboxes_empty() -> bool:
                async for outbox in cluster.scan_iter(match=keys.OUTBOX_PATTERN):
                    if await cluster.zcard(outbox):
                        return False
                return True

            await wait_until(outboxes_empty, RELAY_DEADLINE_S, "the relay to finish transfers")

    try:
        gifts = [e for e in await journal_entries(cluster) if e["type"] == "gift"]
        credited = Counter(e["key"] for e in gifts)
        assert [key for key, n in credited.items() if n > 1] == []  # none twice
        assert senders.acked <= credited.keys() <= set(senders.tried)
        coins = int(await cluster.hget(keys.wallet("carol"), "coins") or 0)
        assert coins == 10_000 - len(gifts)
        report = await reconcile(cluster, 5000)
        assert report.ok, report.format()
    finally:
        await cluster.aclose()
