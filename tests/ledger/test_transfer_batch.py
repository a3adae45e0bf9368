"""The credits of gifts across slots batched (ledger/transfer_batch.py): the transfers
of one pass to one stream that come while another of the stream's is under way
credited in one `credit_stream_batch` call, to one streamer in one
`credit_streamer_batch` call. Each is credited exactly once, a
repeat credits nothing again, a transfer refused leaves the others whole, and a
worker gone with the batched call in flight leaves every transfer to the relay."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY
from redis.asyncio.cluster import RedisCluster

from gifting_server.config import Settings
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, transfers, wallet
from gifting_server.ledger.store import Store, connect
from tests.conftest import make_settings
from tests.factories import fund, live_stream, viewer
from tests.faults import wait_until
from tests.ledger.support import FakeClock, journal_entries
from tests.ledger.test_concurrency import assert_reconciled

T0 = 1_704_283_200_000  # 2024-01-03 12:00 UTC
VIEWERS = [viewer(f"v{i}") for i in range(6)]
# finger_heart costs 5 coins: 2.5 diamonds a gift at the 50% share. A gift alone would
# earn 2, the lifetime coins received earn 15 for six (earn.lua): the exact figure.
PRICE = 5


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return dataclasses.replace(make_settings(redis_url, tmp_path), gifts_across_slots=True)


@pytest.fixture
async def ledger(store: Store) -> Store:
    store.clock = FakeClock(T0)
    for v in VIEWERS:
        await fund(store, v.user_id, "coins_100")
    await live_stream(store)
    return store


async def debited(store: Store, who: int, key: str = "k1") -> transfers.Debited:
    """Steps 1 and 2 of VIEWERS[who]'s gift: what a worker holds before the credits."""
    sender = VIEWERS[who]
    gift = store.settings.gift("finger_heart")
    assert gift is not None
    fragment = gifts.event_fragment(sender, gift)
    return await transfers.debit(store, sender, "s1", "streamer1", gift, 1, key, fragment)


def transfer_of(debit: transfers.Debited) -> transfers.Transfer:
    assert debit.transfer is not None
    return debit.transfer


def calls(step: str) -> tuple[float, float]:
    """The credit calls of `step` so far and the transfers they carried."""
    labels = {"step": step}
    made = REGISTRY.get_sample_value("gifting_transfer_credit_calls_total", labels) or 0.0
    carried = REGISTRY.get_sample_value("gifting_transfers_batched_total", labels) or 0.0
    return made, carried


async def credit_together(
    store: Store, debits: list[transfers.Debited]
) -> list[transfers.Credited | BaseException]:
    """The credits of these transfers as one flush of a worker sends them."""
    return await asyncio.gather(
        *(transfers.finish_batched(store, transfer_of(d), d.daily_limit) for d in debits),
        return_exceptions=True,
    )


async def gift_event_ids(store: Store) -> list[int]:
    return [
        int(entry_id.partition("-")[0])
        for entry_id, fields in await store.redis.xrange(keys.stream_history("s1"))
        if '"kind":"gift"' in fields["e"]
    ]


async def pending(store: Store) -> list[str]:
    found: list[str] = []
    for v in VIEWERS:
        found += await store.redis.zrange(keys.outbox(v.user_id), 0, -1)
    return found


async def gift_records(store: Store) -> list[dict[str, str]]:
    return [e for e in await journal_entries(store.redis) if e["type"] == "gift"]


async def relay_all(store: Store) -> int:
    slots = sorted({keys.slot_of_tag(f"u:{v.user_id}") for v in VIEWERS})
    return await transfers.relay_transfers(
        store, slots, store.clock() - store.settings.transfers.relay_after_ms
    )


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
    assert await pending(store) == []
    await assert_reconciled(store)


async def test_a_batch_to_one_stream_credits_each_transfer_exactly_once(ledger: Store) -> None:
    debits = [await debited(ledger, i) for i in range(len(VIEWERS))]
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
    debits = [await debited(ledger, i) for i in range(len(VIEWERS))]
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
    debits = [await debited(ledger, i) for i in range(len(VIEWERS))]
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
    assert await pending(ledger) == [transfer_of(debits[2]).id]

    clock = ledger.clock
    assert isinstance(clock, FakeClock)
    clock.advance(ledger.settings.transfers.relay_after_ms)
    assert await relay_all(ledger) == 1
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
    debits = [await debited(ledger, i) for i in range(len(VIEWERS))]
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
    assert sorted(await pending(ledger)) == sorted(transfer_of(d).id for d in debits)

    # Any worker's relay finishes them, each once.
    relay = Store(await connect(redis_url, 10.0), ledger.settings)
    relay.clock = ledger.clock
    try:
        assert isinstance(relay.clock, FakeClock)
        relay.clock.advance(ledger.settings.transfers.relay_after_ms)
        assert await relay_all(relay) == len(VIEWERS)
        assert await relay_all(relay) == 0
        records = await gift_records(relay)
        await assert_each_credited_once(
            relay, [transfers.Credited(int(r["event_id"]), 1) for r in records]
        )
    finally:
        await relay.close()


async def test_one_senders_gifts_in_one_batch_advance_the_combo_as_one_after_another(
    ledger: Store,
) -> None:
    debits = [await debited(ledger, 0, key=f"k{n}") for n in range(5)]
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
