"""Races against the real Redis: many concurrent calls, one consistent ledger.

Every test ends by running the ledger audit (`reconcile`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest

from gifting_server.config import Settings
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, payments, streams, wallet
from gifting_server.ledger.clock import DAY_MS
from gifting_server.ledger.gifts import GiftReceipt
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import Store, connect
from gifting_server.ledger.wallet import Cashout
from tests.conftest import make_settings
from tests.factories import fund, live_stream, viewer
from tests.history import history_ids
from tests.ledger.support import FakeClock, journal_entries, snapshot

T0 = 1_704_283_200_000  # 2024-01-03 12:00 UTC
ALICE = viewer("alice")


async def assert_reconciled(store: Store) -> None:
    """The ledger audit agrees with what the test did to the ledger."""
    report = await reconcile(store.redis, share_bps=store.settings.economy.creator_share_bps)
    assert report.ok, report.format()


def gift(store: Store, gift_id: str, count: int, key: str, stream: str = "s1") -> Any:
    item = store.settings.gift(gift_id)
    assert item is not None
    return gifts.run_send_gift(store, ALICE, stream, item, count, key)


async def race(calls: list[Awaitable[Any]]) -> tuple[list[Any], list[GiftingError]]:
    """Run every call at once; split the answers from the refusals."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    refused = [r for r in results if isinstance(r, GiftingError)]
    answers = [r for r in results if not isinstance(r, BaseException)]
    assert len(answers) + len(refused) == len(results), [
        r for r in results if isinstance(r, BaseException) and not isinstance(r, GiftingError)
    ]
    return answers, refused


async def journal_types(store: Store) -> list[str]:
    return [fields["type"] for fields in await journal_entries(store.redis)]


@pytest.fixture
async def fast(store: Store) -> Store:
    """A store whose rate limit never gets in the way, on a fake clock; alice holds
    100 coins and stream s1 of streamer1 is live."""
    base = store.settings
    limits = {"gift_burst": 1000, "gift_rate_per_s": 1000}
    settings = make_settings(str(base.redis_url), base.data_dir, limits=limits)
    fast = Store(store.redis, settings, clock=FakeClock(T0))
    await fund(fast, "alice")
    await live_stream(fast)
    return fast


async def test_200_concurrent_gifts_against_37_coins_let_exactly_37_through(fast: Store) -> None:
    await gift(fast, "rose", 63, "spend-63")  # 37 coins left
    answers, refused = await race([gift(fast, "rose", 1, f"tap-{i}") for i in range(200)])

    assert len(answers) == 37
    assert {e.code for e in refused} == {ErrorCode.INSUFFICIENT_FUNDS}
    assert sorted(a.coins for a in answers) == list(range(37))  # every balance seen once
    assert (await wallet.read_wallet(fast, "alice"))["coins"] == 0
    assert (await wallet.read_wallet(fast, "streamer1"))["diamonds"] == 50
    assert await fast.redis.hget(keys.platform_account("streamer1"), "coins") == "50"
    assert (await journal_types(fast)).count("gift") == 38
    assert await fast.redis.zscore(keys.stream_leaderboard("s1"), "alice") == 100
    assert await history_ids(fast.redis, "s1") == list(range(1, 39))
    assert await fast.redis.hget(keys.stream("s1"), "seq") == "38"
    await assert_reconciled(fast)


async def test_two_concurrent_gifts_cannot_overdraw(fast: Store) -> None:
    await gift(fast, "rose", 40, "spend-40")  # 60 coins left
    answers, refused = await race([gift(fast, "rose", 60, "a"), gift(fast, "rose", 60, "b")])
    assert [a.coins for a in answers] == [0]
    assert [e.code for e in refused] == [ErrorCode.INSUFFICIENT_FUNDS]
    await assert_reconciled(fast)


# --- idempotency ---------------------------------------------------------------------------


async def test_same_gift_key_twice_debits_once_and_answers_the_same(fast: Store) -> None:
    first = await gift(fast, "finger_heart", 2, "k1")
    before = await snapshot(fast.redis)
    again = await gift(fast, "finger_heart", 2, "k1")
    assert again == GiftReceipt(first.event_id, first.coins, first.combo, replayed=True)
    assert first.replayed is False
    assert await snapshot(fast.redis) == before
    assert (await wallet.read_wallet(fast, "alice"))["coins"] == 90
    await assert_reconciled(fast)


async def test_same_gift_key_20_times_concurrently_debits_once_and_answers_the_same(
    fast: Store,
) -> None:
    answers, refused = await race([gift(fast, "finger_heart", 2, "k1") for _ in range(20)])
    assert refused == []
    assert {(a.event_id, a.coins, a.combo) for a in answers} == {(1, 90, 2)}
    assert sorted(a.replayed for a in answers) == [False] + [True] * 19
    assert (await wallet.read_wallet(fast, "alice"))["coins"] == 90
    assert (await journal_types(fast)).count("gift") == 1
    assert await fast.redis.xlen(keys.stream_history("s1")) == 1
    await assert_reconciled(fast)


async def test_same_gift_key_after_the_stream_ended_still_answers_the_first_result(
    fast: Store,
) -> None:
    first = await gift(fast, "rose", 1, "k1")
    await streams.end_stream(fast, "streamer1", "s1")
    again = await gift(fast, "rose", 1, "k1")
    assert (again.event_id, again.coins, again.replayed) == (first.event_id, 99, True)


@pytest.mark.parametrize(
    ("gift_id", "count", "stream"),
    [("finger_heart", 1, "s1"), ("rose", 2, "s1"), ("rose", 1, "s2")],
    ids=["other gift", "other count", "other stream"],
)
async def test_same_gift_key_for_another_gift_is_a_conflict_and_changes_nothing(
    fast: Store, gift_id: str, count: int, stream: str
) -> None:
    await live_stream(fast, "s2", "streamer2")
    await gift(fast, "rose", 1, "k1")
    before = await snapshot(fast.redis)
    with pytest.raises(GiftingError) as refused:
        await gift(fast, gift_id, count, "k1", stream)
    assert refused.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert await snapshot(fast.redis) == before
    await assert_reconciled(fast)


async def test_same_payment_event_delivered_20_times_concurrently_credits_once(
    fast: Store,
) -> None:
    answers, refused = await race(
        [
            payments.apply_payment(fast, "bob", "ev-b", "payment.succeeded", "coins_500")
            for _ in range(20)
        ]
    )
    assert refused == []
    assert {(a.coins, a.credited) for a in answers} == {(500, 500)}
    assert sum(not a.replayed for a in answers) == 1
    assert (await wallet.read_wallet(fast, "bob"))["coins"] == 500
    await assert_reconciled(fast)


async def test_refund_racing_gifts_never_leaves_a_negative_balance(fast: Store) -> None:
    taps = [gift(fast, "rose", 1, f"tap-{i}") for i in range(50)]
    refund = payments.apply_payment(fast, "alice", "rf-1", "payment.refunded", "coins_100")
    answers, refused = await race([*taps[:25], refund, *taps[25:]])
    receipts = [a for a in answers if isinstance(a, GiftReceipt)]
    [refunded] = [a for a in answers if isinstance(a, payments.PaymentResult)]
    assert {e.code for e in refused} <= {ErrorCode.INSUFFICIENT_FUNDS}
    left = (await wallet.read_wallet(fast, "alice"))["coins"]
    assert left == 100 - len(receipts) - refunded.clawed_back >= 0
    assert refunded.clawed_back + refunded.owed == 100
    await assert_reconciled(fast)


# --- cash-outs -----------------------------------------------------------------------------


async def test_parallel_cashouts_of_the_same_diamonds_let_exactly_one_through(
    fast: Store,
) -> None:
    await fund(fast, "alice", "coins_5000")
    await gift(fast, "rose", 4000, "earn")  # streamer1 earns 2000 diamonds
    fast.clock.advance(7 * DAY_MS)  # type: ignore[attr-defined]
    calls = [wallet.cashout(fast, "streamer1", 2000, f"co-{i}") for i in range(10)]
    answers, refused = await race(calls)

    assert [a.diamonds_left for a in answers] == [0]
    assert {e.code for e in refused} == {ErrorCode.INSUFFICIENT_DIAMONDS}
    assert len(refused) == 9
    assert (await wallet.read_wallet(fast, "streamer1"))["diamonds"] == 0
    assert await fast.redis.hlen(keys.cashouts("streamer1")) == 1
    assert (await journal_types(fast)).count("cashout") == 1
    await assert_reconciled(fast)


async def test_same_cashout_key_concurrently_pays_once(fast: Store) -> None:
    await fund(fast, "alice", "coins_10000")
    await gift(fast, "rose", 8000, "earn")  # 4000 diamonds: enough for two payouts
    fast.clock.advance(7 * DAY_MS)  # type: ignore[attr-defined]
    answers, refused = await race(
        [wallet.cashout(fast, "streamer1", 2000, "co-1") for _ in range(10)]
    )
    assert refused == []
    assert len({a.cashout_id for a in answers}) == 1
    assert all(isinstance(a, Cashout) and a.diamonds_left == 2000 for a in answers)
    assert sum(not a.replayed for a in answers) == 1
    assert (await wallet.read_wallet(fast, "streamer1"))["diamonds"] == 2000
    await assert_reconciled(fast)


async def test_more_concurrent_gifts_than_redis_connections_wait_instead_of_failing(
    settings: Settings,
) -> None:
    """The pool holds 256 connections; a burst of 600 gifts queues for them."""
    assert settings.redis_url
    relaxed = make_settings(
        settings.redis_url,
        settings.data_dir,
        limits={"gift_burst": 10_000, "gift_rate_per_s": 10_000},
    )
    client = await connect(settings.redis_url, relaxed.limits.request_timeout_s)
    store = Store(client, relaxed)
    try:
        await fund(store, "alice", "coins_1000")
        stream = await live_stream(store)
        rose = relaxed.gift("rose")
        assert rose is not None
        receipts = await asyncio.gather(
            *(
                gifts.run_send_gift(store, viewer("alice"), stream, rose, 1, f"b{i}")
                for i in range(600)
            )
        )
        assert sorted(r.coins for r in receipts) == list(range(400, 1000))
    finally:
        await client.aclose()
