"""The batching window ([redis] gift_batch_window_ms, ledger/gift_batch.py): on one
Redis the gifts of one window go as one send_gifts call, a full batch goes at once,
window 0 keeps a batch to one pass of the loop, and a gift keeps exactly-once
whatever happens to its caller or to the call."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable

import pytest

from gifting_server.auth import Identity
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gift_batch, gifts, keys, streams
from gifting_server.ledger.gift_batch import MAX_BATCH, GiftBatch
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, viewer
from tests.ledger.conftest import one_script_only
from tests.ledger.support import journal_entries
from tests.ledger.test_concurrency import assert_reconciled
from tests.ledger.test_gift_batch import batches

LONG_MS = 3_600_000  # a window no test waits out: what ends it is the behaviour tested
PASSES = 10_000  # more loop passes than a gift takes to reach its batch


def windowed(store: Store, window_ms: int) -> Store:
    redis = dataclasses.replace(store.settings.redis, gift_batch_window_ms=window_ms)
    store.settings = dataclasses.replace(store.settings, redis=redis)
    return store


def group_commit(store: Store, calls_in_flight: int) -> Store:
    redis = dataclasses.replace(store.settings.redis, gift_calls_in_flight=calls_in_flight)
    store.settings = dataclasses.replace(store.settings, redis=redis)
    return store


def send(store: Store, who: Identity, key: str) -> asyncio.Task[gifts.GiftReceipt]:
    rose = store.settings.gift("rose")
    assert rose is not None
    return asyncio.ensure_future(gifts.run_send_gift(store, who, "s1", rose, 1, key))


async def queued(store: Store, count: int) -> None:
    """Until `count` gifts wait in this Redis's batch (each pass: one step of each task)."""
    batch = GiftBatch.of(store.scripts)
    for _ in range(PASSES):
        if len(batch.queued) == count:
            return
        await asyncio.sleep(0)
    raise AssertionError(f"{len(batch.queued)} gifts queued, not {count}")


async def sent(calls_before: float) -> None:
    """Until a script call carried gifts since `calls_before` was read."""
    for _ in range(PASSES):
        if batches()[0] > calls_before:
            return
        await asyncio.sleep(0)
    raise AssertionError("no call went out")


async def answered(*calls: Awaitable[gifts.GiftReceipt]) -> list[gifts.GiftReceipt]:
    # Only a safety net against a hang: each answer comes at the end of a window
    # cut short, or at once; never after this.
    return await asyncio.wait_for(asyncio.gather(*calls), timeout=60)


@pytest.fixture
async def ledger(store: Store) -> Store:
    one_script_only(store, "the batch is the single Redis's call; the steps have no window")
    await live_stream(store)
    for who in ("alice", "carol"):
        await fund(store, who, "coins_100")
    # The owner of a stream is looked up once: read it now, so that every gift of a
    # test reaches its batch with no lookup first (and with Redis gone, too).
    await streams.streamer_of(store, "s1")
    return store


async def test_gifts_of_different_passes_within_the_window_go_as_one_call(
    ledger: Store,
) -> None:
    windowed(ledger, 1000)
    calls, carried = batches()
    first = send(ledger, viewer("alice"), "w1")
    await queued(ledger, 1)
    assert batches() == (calls, carried)  # the first gift waits for the window
    second = send(ledger, viewer("carol"), "w2")
    a, c = await answered(first, second)
    assert batches() == (calls + 1, carried + 2)
    assert (a.coins, c.coins, c.event_id) == (99, 99, a.event_id + 1)


async def test_window_zero_sends_a_pass_s_gifts_at_its_end(ledger: Store) -> None:
    windowed(ledger, 0)
    calls, carried = batches()
    first = send(ledger, viewer("alice"), "z1")
    await queued(ledger, 1)
    await sent(calls)  # at the end of the pass, before the gift sent next
    second = send(ledger, viewer("carol"), "z2")
    await answered(first, second)
    assert batches() == (calls + 2, carried + 2)


async def test_a_full_batch_goes_before_its_window_ends(ledger: Store) -> None:
    windowed(ledger, LONG_MS)
    senders = [viewer(f"f{i}") for i in range(MAX_BATCH)]
    for who in senders:
        await fund(ledger, who.user_id, "coins_100")
    calls, carried = batches()
    receipts = await answered(*(send(ledger, who, "full") for who in senders))
    assert batches() == (calls + 1, carried + MAX_BATCH)
    assert sorted(r.coins for r in receipts) == [99] * MAX_BATCH
    await assert_reconciled(ledger)


async def test_a_caller_gone_during_the_window_leaves_its_gift_exactly_once(
    ledger: Store,
) -> None:
    """The connection of the first gift closes while it waits for the window: its gift
    is either whole, with its record answering the retry, or not made at all."""
    windowed(ledger, 1000)
    seq = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    gone = send(ledger, viewer("alice"), "gone")
    await queued(ledger, 1)
    gone.cancel()
    (stays,) = await answered(send(ledger, viewer("carol"), "stays"))
    assert gone.cancelled()
    (retry,) = await answered(send(ledger, viewer("alice"), "gone"))
    made = int(await ledger.redis.hget(keys.stream("s1"), "seq")) - seq
    gift_keys = [e["key"] for e in await journal_entries(ledger.redis) if e["type"] == "gift"]
    assert gift_keys.count("gone") == 1 and gift_keys.count("stays") == 1
    assert made == 2  # the two gifts once each, the retry none
    assert retry.coins == 99 and retry.event_id != stays.event_id
    if retry.replayed:  # the gift went with the window's call: its record answers
        assert retry.event_id == stays.event_id - 1
    await assert_reconciled(ledger)


async def test_a_failed_windowed_call_fails_every_gift_of_its_batch(ledger: Store) -> None:
    """Redis gone: the gifts of two passes in one window all get service_unavailable."""
    windowed(ledger, 1000)
    await ledger.scripts.close()
    port_closed = ledger.scripts.pipeline
    port_closed.options = {**port_closed.options, "port": 1}  # nothing listens there
    calls, carried = batches()
    first = send(ledger, viewer("alice"), "x1")
    await queued(ledger, 1)
    second = send(ledger, viewer("carol"), "x2")
    outcomes = await asyncio.wait_for(
        asyncio.gather(first, second, return_exceptions=True), timeout=60
    )
    assert batches() == (calls + 1, carried + 2)
    for outcome in outcomes:
        assert isinstance(outcome, GiftingError)
        assert outcome.code == ErrorCode.SERVICE_UNAVAILABLE


async def test_the_steps_across_slots_do_not_wait_for_a_window(store: Store) -> None:
    """On a cluster (and with gifts_across_slots) a gift takes the steps across slots:
    no batch, so no window to wait for, however long it is set."""
    if not store.gifts_across_slots:
        pytest.skip("the one-script path: the tests above")
    windowed(store, LONG_MS)
    await live_stream(store)
    await fund(store, "alice", "coins_100")
    calls, carried = batches()
    (receipt,) = await answered(send(store, viewer("alice"), "slots"))
    assert receipt.coins == 99 and not receipt.replayed
    assert batches() == (calls, carried)


async def test_gifts_wait_for_the_call_in_flight_and_then_go_together(ledger: Store) -> None:
    """Group commit ([redis] gift_calls_in_flight = 1): while a call is in flight (held
    in Redis by a pause of writes), the gifts of later passes wait and go as one call."""
    group_commit(windowed(ledger, 0), 1)
    await fund(ledger, "dave", "coins_100")
    calls, carried = batches()
    await ledger.redis.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
    try:
        first = send(ledger, viewer("alice"), "g1")
        await sent(calls)
        second = send(ledger, viewer("carol"), "g2")
        await queued(ledger, 1)
        third = send(ledger, viewer("dave"), "g3")
        await queued(ledger, 2)
        assert batches() == (calls + 1, carried + 1)  # the two wait for the first
    finally:
        await ledger.redis.execute_command("CLIENT", "UNPAUSE")
    receipts = await answered(first, second, third)
    assert batches() == (calls + 2, carried + 3)
    assert [r.event_id - receipts[0].event_id for r in receipts] == [0, 1, 2]


async def test_a_call_answered_with_too_few_replies_fails_every_gift_of_it(
    ledger: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply that does not match its gifts (a defect of the script, simulated by
    dropping its last gift's reply) reaches every caller as an error: none hangs."""
    split = gift_batch.split_replies
    monkeypatch.setattr(gift_batch, "split_replies", lambda flat: split(flat)[:-1])
    windowed(ledger, LONG_MS)
    alice, carol = viewer("alice"), viewer("carol")
    first, second = send(ledger, alice, "k1"), send(ledger, carol, "k2")
    await queued(ledger, 2)
    GiftBatch.of(ledger.scripts)._flush()
    outcomes = await asyncio.wait_for(
        asyncio.gather(first, second, return_exceptions=True), timeout=60
    )
    assert all(isinstance(o, RuntimeError) for o in outcomes), outcomes
