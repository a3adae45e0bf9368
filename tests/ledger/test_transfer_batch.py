"""The credits of gifts across slots batched (ledger/transfer_batch.py): the transfers
of one pass to one stream that come while another of the stream's is under way
credited in one `credit_stream_batch` call, to one streamer in one
`credit_streamer_batch` call. Each is credited exactly once, a
repeat credits nothing again, a transfer refused leaves the others whole, and a
worker gone with the batched call in flight leaves every transfer to the relay."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import redis
from prometheus_client import REGISTRY
from redis.asyncio.cluster import RedisCluster

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys, transfers, wallet
from gifting_server.ledger.store import Store, connect
from tests.factories import viewer
from tests.faults import wait_until
from tests.ledger.test_concurrency import assert_reconciled
from tests.ledger.transfers_support import (
    clock_of,
    credit_together,
    debit_only,
    gift_event_ids,
    gift_records,
    open_ledger,
    pending,
    relay,
    settings,
    transfer_of,
)

__all__ = ["settings"]
VIEWERS = [viewer(f"v{i}") for i in range(6)]
# finger_heart costs 5 coins: 2.5 diamonds a gift at the 50% share. A gift alone would
# earn 2, the lifetime coins received earn 15 for six (earn.lua): the exact figure.
PRICE = 5


@pytest.fixture
async def ledger(store: Store) -> Store:
    return await open_ledger(store, VIEWERS)


def calls(step: str) -> tuple[float, float]:
    """The credit calls of `step` so far and the transfers they carried."""
    labels = {"step": step}
    made = REGISTRY.get_sample_value("gifting_transfer_credit_calls_total", labels) or 0.0
    carried = REGISTRY.get_sample_value("gifting_transfers_batched_total", labels) or 0.0
    return made, carried


async def assert_each_credited_once(store: Store, credited: list[transfers.Credited]) -> None:
    event_ids = [c.event_id for c in credited]
    assert await gift_event_ids(store) == sorted(event_ids)  # once each, in order
    assert len(set(event_ids)) == len(VIEWERS)
    earned = len(VIEWERS) * PRICE * 5000 // 10000
    assert (await wallet.read_wallet(store, "streamer1"))["diamonds"] == earned
    records = await gift_records(store)
    assert sorted(r["user"] for r in records) == sorted(v.user_id for v in VIEWERS)
    assert sorted(int(r["event_id"]) for r in records) == sorted(event_ids)
    assert sum(int(r["diamonds"]) for r in records) == earned
    assert await pending(store, VIEWERS) == []
    await assert_reconciled(store)


async def test_a_batch_to_one_stream_credits_each_transfer_exactly_once(ledger: Store) -> None:
    debits = [await debit_only(ledger, "k1", v) for v in VIEWERS]
    stream_before, streamer_before = calls("credit_stream"), calls("credit_streamer")
    credited = await credit_together(ledger, debits)
    assert all(isinstance(c, transfers.Credited) for c in credited), credited
    # On the stream, the first at once, alone; the five that came while it was under
    # way in one call. On the streamer, fewer calls than transfers too.
    made, carried = calls("credit_stream")
    assert (made - stream_before[0], carried - stream_before[1]) == (2, len(VIEWERS))
    made, carried = calls("credit_streamer")
    assert carried - streamer_before[1] == len(VIEWERS)
    assert made - streamer_before[0] < len(VIEWERS)
    await assert_each_credited_once(ledger, credited)  # type: ignore[arg-type]


async def test_repeating_a_batch_in_whole_or_in_part_credits_nothing_twice(
    ledger: Store,
) -> None:
    debits = [await debit_only(ledger, "k1", v) for v in VIEWERS]
    # Two finished alone first, by the one-transfer scripts (a relay that got there
    # first); one credited on its stream only (a worker gone between the two credits).
    first = [await transfers.finish(ledger, transfer_of(d), d.daily_limit) for d in debits[:2]]
    await transfers.credit_stream(ledger, transfer_of(debits[2]))
    credited = await credit_together(ledger, debits)
    assert credited[:2] == first
    again = await credit_together(ledger, debits)
    assert again == credited
    await assert_each_credited_once(ledger, credited)  # type: ignore[arg-type]


async def test_a_transfer_refused_in_a_batch_leaves_the_others_credited_and_itself_pending(
    ledger: Store,
) -> None:
    debits = [await debit_only(ledger, "k1", v) for v in VIEWERS]
    # The third one's call carries an argument its script refuses: it alone is refused,
    # with nothing of it written, and its transfer stays in its outbox.
    bad = dataclasses.replace(
        debits[2], transfer=dataclasses.replace(transfer_of(debits[2]), count=0)
    )
    results = await credit_together(ledger, [*debits[:2], bad, *debits[3:]])
    refused = results[2]
    assert isinstance(refused, GiftingError) and refused.code is ErrorCode.INTERNAL_ERROR
    others = [r for i, r in enumerate(results) if i != 2]
    assert all(isinstance(r, transfers.Credited) for r in others), results
    assert await gift_event_ids(ledger) == [r.event_id for r in others]  # type: ignore[union-attr]
    assert await pending(ledger, VIEWERS) == [transfer_of(debits[2]).id]

    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger, VIEWERS) == 1
    records = await gift_records(ledger)
    event_ids = [int(r["event_id"]) for r in records]
    await assert_each_credited_once(ledger, [transfers.Credited(e, 1) for e in event_ids])


def node_of(store: Store, key: str, url: str) -> redis.Redis:
    """A plain client of the Redis (the master, on a cluster) that holds `key`."""
    if isinstance(store.redis, RedisCluster):
        node = store.redis.get_node_from_key(key)
        return redis.Redis(host=node.host, port=node.port, decode_responses=True)
    return redis.Redis.from_url(url, decode_responses=True)


def blocked_script_calls(node: redis.Redis) -> int:
    return sum(
        1 for c in node.client_list() if "b" in c["flags"] and c["cmd"] in ("evalsha", "eval")
    )


async def test_a_worker_gone_with_the_batched_credit_in_flight_leaves_every_transfer_to_the_relay(
    ledger: Store, redis_url: str
) -> None:
    debits = [await debit_only(ledger, "k1", v) for v in VIEWERS]
    node = node_of(ledger, keys.stream("s1"), redis_url)
    try:
        # The stream's master holds writes: the batched credit reaches it and waits;
        # the worker's connection then goes (the worker died), so it never runs.
        node.client_pause(10_000, all=False)
        try:
            crediting = asyncio.ensure_future(credit_together(ledger, debits))
            await wait_until(lambda: blocked_script_calls(node) == 1, 10, "the batched credit")
            await ledger.scripts.close()
        finally:
            node.client_unpause()
        results = await crediting
        assert all(isinstance(r, GiftingError) for r in results), results
    finally:
        node.close()
    assert await gift_event_ids(ledger) == []
    assert sorted(await pending(ledger, VIEWERS)) == sorted(transfer_of(d).id for d in debits)

    # Any worker's relay finishes them, each once.
    another = Store(await connect(redis_url, 10.0), ledger.settings)
    another.clock = ledger.clock
    try:
        clock_of(another).advance(ledger.settings.transfers.relay_after_ms)
        assert await relay(another, VIEWERS) == len(VIEWERS)
        assert await relay(another, VIEWERS) == 0
        records = await gift_records(another)
        await assert_each_credited_once(
            another, [transfers.Credited(int(r["event_id"]), 1) for r in records]
        )
    finally:
        await another.close()


async def test_one_senders_gifts_in_one_batch_advance_the_combo_as_one_after_another(
    ledger: Store,
) -> None:
    debits = [await debit_only(ledger, f"k{n}", VIEWERS[0]) for n in range(5)]
    before = calls("credit_stream")
    credited = await credit_together(ledger, debits)
    assert calls("credit_stream")[0] == before[0] + 2  # the first alone, then the four
    assert [c.combo for c in credited] == [1, 2, 3, 4, 5]  # type: ignore[union-attr]
    event_ids = [c.event_id for c in credited]  # type: ignore[union-attr]
    assert await gift_event_ids(ledger) == event_ids == sorted(event_ids)
    combo = await ledger.redis.hget(keys.stream("s1"), "c:v0:finger_heart")
    assert combo is not None and combo.startswith("5|")
    # 25 coins at the 50% share: 12 diamonds, where 2 a gift alone would make 10.
    assert (await wallet.read_wallet(ledger, "streamer1"))["diamonds"] == 12
    await assert_reconciled(ledger)
