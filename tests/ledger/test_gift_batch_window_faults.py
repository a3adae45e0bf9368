"""The batching window and group commit under what a client, an operator or a failure
does to them (ledger/gift_batch.py): every gift answered, exactly once, whatever
happens while it waits in its window or while its call is in flight."""

from __future__ import annotations

import asyncio

import pytest

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, streams
from gifting_server.ledger.gift_batch import MAX_BATCH, GiftBatch
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, viewer
from tests.ledger.conftest import one_script_only
from tests.ledger.support import journal_entries
from tests.ledger.test_concurrency import assert_reconciled
from tests.ledger.test_gift_batch import batches
from tests.ledger.test_gift_batch_window import (
    LONG_MS,
    answered,
    group_commit,
    queued,
    send,
    sent,
    windowed,
)


async def gift_keys(store: Store) -> list[str]:
    return [e["key"] for e in await journal_entries(store.redis) if e["type"] == "gift"]


@pytest.fixture
async def ledger(store: Store) -> Store:
    one_script_only(store, "the batch is the single Redis's call; the steps have no window")
    await live_stream(store)
    for who in ("alice", "carol", "dave"):
        await fund(store, who, "coins_100")
    await streams.streamer_of(store, "s1")
    return store


async def test_the_same_key_twice_in_one_window_is_one_gift(ledger: Store) -> None:
    windowed(ledger, LONG_MS)
    calls, _ = batches()
    first = send(ledger, viewer("alice"), "twice")
    await queued(ledger, 1)
    again = send(ledger, viewer("alice"), "twice")
    await queued(ledger, 2)
    rose = ledger.settings.gift("rose")
    assert rose is not None
    other = asyncio.ensure_future(
        gifts.run_send_gift(ledger, viewer("alice"), "s1", rose, 2, "twice")
    )
    await queued(ledger, 3)
    GiftBatch.of(ledger.scripts)._window_ended()  # the window's end, without waiting it out
    a, b, c = await asyncio.wait_for(
        asyncio.gather(first, again, other, return_exceptions=True), timeout=60
    )
    assert isinstance(a, gifts.GiftReceipt) and isinstance(b, gifts.GiftReceipt)
    assert (a.replayed, b.replayed, b.event_id, b.coins) == (False, True, a.event_id, 99)
    assert isinstance(c, GiftingError) and c.code == ErrorCode.IDEMPOTENCY_CONFLICT
    assert batches()[0] == calls + 1
    assert (await gift_keys(ledger)).count("twice") == 1
    await assert_reconciled(ledger)


async def test_65_gifts_go_as_a_full_call_at_once_and_the_last_with_its_window(
    ledger: Store,
) -> None:
    windowed(ledger, LONG_MS)
    senders = [viewer(f"n{i}") for i in range(MAX_BATCH + 1)]
    for who in senders:
        await fund(ledger, who.user_id, "coins_100")
    calls, carried = batches()
    tasks = [send(ledger, who, "n") for who in senders]
    await sent(calls)
    await queued(ledger, 1)  # the 65th opened a window of its own
    assert batches() == (calls + 1, carried + MAX_BATCH)
    GiftBatch.of(ledger.scripts)._window_ended()
    receipts = await answered(*tasks)
    assert batches() == (calls + 2, carried + MAX_BATCH + 1)
    assert sorted(r.coins for r in receipts) == [99] * (MAX_BATCH + 1)
    await assert_reconciled(ledger)


async def test_a_gift_refused_mid_batch_leaves_the_others_whole(ledger: Store) -> None:
    windowed(ledger, LONG_MS)
    await live_stream(ledger, "s2", "streamer2")
    await streams.streamer_of(ledger, "s2")
    rose = ledger.settings.gift("rose")
    assert rose is not None
    calls, carried = batches()
    first = send(ledger, viewer("alice"), "m1")
    broke = asyncio.ensure_future(
        gifts.run_send_gift(ledger, viewer("carol"), "s1", rose, 99, "m2")
    )
    poor = asyncio.ensure_future(  # carol has 100 coins: this one is refused
        gifts.run_send_gift(ledger, viewer("carol"), "s2", rose, 2, "m3")
    )
    last = asyncio.ensure_future(gifts.run_send_gift(ledger, viewer("dave"), "s2", rose, 1, "m4"))
    await queued(ledger, 4)
    GiftBatch.of(ledger.scripts)._window_ended()
    a, b, c, d = await asyncio.wait_for(
        asyncio.gather(first, broke, poor, last, return_exceptions=True), timeout=60
    )
    assert isinstance(c, GiftingError) and c.code == ErrorCode.INSUFFICIENT_FUNDS
    assert [x.coins for x in (a, b, d) if isinstance(x, gifts.GiftReceipt)] == [99, 1, 99]
    assert batches() == (calls + 1, carried + 4)
    assert sorted(await gift_keys(ledger)) == ["m1", "m2", "m4"]
    await assert_reconciled(ledger)


async def test_a_caller_gone_while_its_call_is_in_flight_leaves_its_gift_whole(
    ledger: Store,
) -> None:
    windowed(ledger, 0)
    calls, _ = batches()
    await ledger.redis.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
    try:
        gone = send(ledger, viewer("alice"), "inflight")
        await sent(calls)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
    finally:
        await ledger.redis.execute_command("CLIENT", "UNPAUSE")
    (retry,) = await answered(send(ledger, viewer("alice"), "inflight"))
    assert retry.replayed and retry.coins == 99
    assert (await gift_keys(ledger)).count("inflight") == 1
    await assert_reconciled(ledger)


async def test_with_one_call_in_flight_a_failed_call_does_not_hold_the_next_gifts(
    ledger: Store,
) -> None:
    """Group commit with one call in flight: that call's connection is killed while
    Redis holds it; the gifts waiting for it go once it fails, and every gift is
    answered, each made at most once."""
    group_commit(windowed(ledger, 0), 1)
    calls, _ = batches()
    await ledger.redis.execute_command("CLIENT", "PAUSE", 60_000, "WRITE")
    try:
        first = send(ledger, viewer("alice"), "k1")
        await sent(calls)
        second = send(ledger, viewer("carol"), "k2")
        await queued(ledger, 1)
        for _ in range(100):  # the window's end: held for the call in flight
            await asyncio.sleep(0)
        assert GiftBatch.of(ledger.scripts).held
        await ledger.redis.execute_command("CLIENT", "KILL", "SKIPME", "yes", "TYPE", "normal")
        outcome = await asyncio.wait_for(asyncio.gather(first, return_exceptions=True), 60)
        assert isinstance(outcome[0], GiftingError)
        assert outcome[0].code == ErrorCode.SERVICE_UNAVAILABLE
        await sent(calls + 1)  # the held gift went once the call failed
    finally:
        await ledger.redis.execute_command("CLIENT", "UNPAUSE")
    (c,) = await answered(second)
    assert c.coins == 99
    (retry,) = await answered(send(ledger, viewer("alice"), "k1"))
    assert retry.coins == 99
    assert sorted(await gift_keys(ledger)) == ["k1", "k2"]
    await assert_reconciled(ledger)


async def test_closing_the_store_answers_the_gifts_waiting_in_the_window(ledger: Store) -> None:
    """Shutdown (the lifespan's end closes the store) while a gift waits in a window:
    it is sent before the connection closes and answered, not left to a timer that
    would run after the close (on a connection opened again and never closed) or
    never, once the loop is gone."""
    windowed(ledger, LONG_MS)
    waiting = send(ledger, viewer("alice"), "closing")
    await queued(ledger, 1)
    await asyncio.wait_for(ledger.close(), timeout=60)
    (receipt,) = await answered(waiting)
    assert receipt.coins == 99 and not receipt.replayed
    assert ledger.scripts.pipeline._protocol is None  # nothing opened after the close
    assert await ledger.redis.hget(keys.wallet("alice"), "coins") == "99"


async def test_with_one_call_in_flight_a_hung_call_holds_the_next_gifts_only_until_its_timeout(
    ledger: Store,
) -> None:
    """Redis holds the call in flight and never answers it: it fails at the pipeline's
    timeout, and the gifts held for it go then, answered."""
    group_commit(windowed(ledger, 0), 1)
    calls, _ = batches()
    await ledger.redis.execute_command("CLIENT", "PAUSE", 600_000, "WRITE")
    try:
        first = send(ledger, viewer("alice"), "h1")
        await sent(calls)
        second = send(ledger, viewer("carol"), "h2")
        await queued(ledger, 1)
        outcome = await asyncio.wait_for(asyncio.gather(first, return_exceptions=True), 60)
        assert isinstance(outcome[0], GiftingError)
        assert outcome[0].code == ErrorCode.SERVICE_UNAVAILABLE
        await sent(calls + 1)  # the held gift went once the call timed out
    finally:
        await ledger.redis.execute_command("CLIENT", "UNPAUSE")
    (c,) = await answered(second)
    assert c.coins == 99
    (retry,) = await answered(send(ledger, viewer("alice"), "h1"))
    assert retry.coins == 99
    assert sorted(await gift_keys(ledger)) == ["h1", "h2"]
    await assert_reconciled(ledger)


async def test_scripts_flushed_while_gifts_wait_in_the_window_are_loaded_again(
    ledger: Store,
) -> None:
    """Redis restarted or its scripts flushed between the window's first gift and its
    end: the call's NOSCRIPT loads send_gifts again and every gift is made once."""
    windowed(ledger, LONG_MS)
    first = send(ledger, viewer("alice"), "f1")
    await queued(ledger, 1)
    second = send(ledger, viewer("carol"), "f2")
    await queued(ledger, 2)
    await ledger.redis.script_flush()
    GiftBatch.of(ledger.scripts)._window_ended()
    a, c = await answered(first, second)
    assert (a.coins, c.coins, c.event_id) == (99, 99, a.event_id + 1)
    assert sorted(await gift_keys(ledger)) == ["f1", "f2"]
    await assert_reconciled(ledger)
