"""recharge.lua through `payments.apply_payment`: purchases, refunds, debts, exactly once.

Every test runs both ways a payment is applied: the one script of a single Redis, and
the steps across slots of a cluster (claim, recharge with the user's record, mark),
here on one Redis (tests/cluster/test_cluster_payments.py runs them on a cluster)."""

from __future__ import annotations

from collections.abc import Awaitable

import pytest

from gifting_server.errors import ErrorCode
from gifting_server.ledger import gifts, keys, payments, wallet
from gifting_server.ledger.payments import PaymentResult
from gifting_server.ledger.store import Store
from tests.factories import live_stream, viewer
from tests.ledger.support import FakeClock, assert_refused, journal_entries, snapshot
from tests.topology import on_cluster

T0 = 1_704_283_200_000  # 2024-01-03 12:00 UTC
BUY, REFUND = "payment.succeeded", "payment.refunded"


def pay(
    store: Store, event_id: str, kind: str = BUY, package: str = "coins_100", user: str = "alice"
) -> Awaitable[PaymentResult]:
    return payments.apply_payment(store, user, event_id, kind, package)


async def journal(store: Store) -> list[dict[str, str]]:
    return await journal_entries(store.redis)


async def spend(store: Store, coins: int) -> None:
    rose = store.settings.gift("rose")
    assert rose is not None
    await gifts.run_send_gift(store, viewer("alice"), "s1", rose, coins, f"spend-{coins}")


# A cluster applies a payment only in steps across slots (Store.payments_across_slots).
PAYMENT_PATHS = ["across slots"] if on_cluster() else ["one script", "across slots"]


@pytest.fixture(autouse=True, params=list(PAYMENT_PATHS))
def payment_path(request: pytest.FixtureRequest, store: Store) -> None:
    store.payments_across_slots = request.param == "across slots"


@pytest.fixture(autouse=True)
def clock(store: Store) -> FakeClock:
    store.clock = fake = FakeClock(T0)
    return fake


# --- purchases -----------------------------------------------------------------------------


async def test_purchase_credits_the_package_coins_and_journals_it(store: Store) -> None:
    assert await pay(store, "ev1") == PaymentResult(
        coins=100, credited=100, clawed_back=0, owed=0, replayed=False
    )
    assert (await wallet.read_wallet(store, "alice"))["coins"] == 100
    assert await store.redis.hgetall(keys.purchases("alice")) == {"coins_100": "1"}
    assert await journal(store) == [
        {"type": "purchase", "user": "alice", "payment": "ev1", "package": "coins_100",
         "coins": "100", "settled": "0", "at": str(T0)},
    ]  # fmt: skip


async def test_purchases_add_up_per_package(store: Store) -> None:
    await pay(store, "ev1")
    await pay(store, "ev2", package="coins_500")
    assert (await pay(store, "ev3")).coins == 700
    assert await store.redis.hgetall(keys.purchases("alice")) == {
        "coins_100": "2", "coins_500": "1",
    }  # fmt: skip


async def test_redelivered_payment_answers_the_same_and_changes_nothing(store: Store) -> None:
    first = await pay(store, "ev1")
    await pay(store, "ev2")
    before = await snapshot(store.redis)
    again = await pay(store, "ev1")
    assert again == PaymentResult(first.coins, first.credited, 0, 0, replayed=True)
    assert await snapshot(store.redis) == before


@pytest.mark.parametrize(
    ("kind", "package"), [(REFUND, "coins_100"), (BUY, "coins_500")], ids=["kind", "package"]
)
async def test_same_event_id_with_other_content_is_a_conflict_and_changes_nothing(
    store: Store, kind: str, package: str
) -> None:
    await pay(store, "ev1")
    await assert_refused(store, ErrorCode.IDEMPOTENCY_CONFLICT, pay(store, "ev1", kind, package))


async def test_same_event_id_for_another_user_is_a_conflict_and_credits_no_one(
    store: Store,
) -> None:
    """A provider event id names one payment: delivered again with another user it must
    not mint coins a second time (reconcile flags an event id journaled twice)."""
    await pay(store, "ev1")
    await assert_refused(store, ErrorCode.IDEMPOTENCY_CONFLICT, pay(store, "ev1", user="bob"))


async def test_unknown_package_is_refused_and_changes_nothing(store: Store) -> None:
    await pay(store, "ev1")
    await assert_refused(store, ErrorCode.UNKNOWN_PACKAGE, pay(store, "ev2", package="coins_7"))


async def test_unknown_event_type_is_refused_and_changes_nothing(store: Store) -> None:
    await pay(store, "ev1")
    await assert_refused(store, ErrorCode.INVALID_REQUEST, pay(store, "ev2", "payment.pending"))


# --- refunds and debts ---------------------------------------------------------------------


async def test_refund_of_an_unspent_purchase_takes_every_coin_back(store: Store) -> None:
    await pay(store, "ev1")
    assert await pay(store, "rf1", REFUND) == PaymentResult(0, 0, 100, 0, replayed=False)
    assert await store.redis.hgetall(keys.purchases("alice")) == {"coins_100": "0"}
    assert (await journal(store))[-1] == {
        "type": "refund", "user": "alice", "payment": "rf1", "package": "coins_100",
        "coins": "100", "clawed": "100", "owed": "0", "at": str(T0),
    }  # fmt: skip


async def test_refund_after_spending_claws_back_the_rest_and_the_next_purchase_pays_the_debt(
    store: Store,
) -> None:
    await pay(store, "ev1")
    await live_stream(store)
    await spend(store, 30)
    assert await pay(store, "rf1", REFUND) == PaymentResult(0, 0, 70, 30, replayed=False)
    assert (await wallet.read_wallet(store, "alice"))["owed"] == 30
    assert await pay(store, "ev2") == PaymentResult(70, 70, 0, 0, replayed=False)
    assert (await journal(store))[-1]["settled"] == "30"
    assert await pay(store, "ev3", package="coins_500") == PaymentResult(570, 500, 0, 0, False)


async def test_a_debt_larger_than_a_package_swallows_the_whole_package(store: Store) -> None:
    await pay(store, "ev1", package="coins_500")
    await live_stream(store)
    await spend(store, 450)
    assert (await pay(store, "rf1", REFUND, "coins_500")).owed == 450
    assert await pay(store, "ev2") == PaymentResult(0, 0, 0, 350, replayed=False)


async def test_refund_without_a_purchase_of_that_package_is_refused_and_changes_nothing(
    store: Store,
) -> None:
    await assert_refused(store, ErrorCode.NOTHING_TO_REFUND, pay(store, "rf1", REFUND))
    await pay(store, "ev1")
    await assert_refused(store, ErrorCode.NOTHING_TO_REFUND, pay(store, "rf2", REFUND, "coins_500"))


async def test_second_refund_of_a_single_purchase_is_refused_and_changes_nothing(
    store: Store,
) -> None:
    await pay(store, "ev1")
    await pay(store, "rf1", REFUND)
    await assert_refused(store, ErrorCode.NOTHING_TO_REFUND, pay(store, "rf2", REFUND))


# --- a script never leaves a partial write -------------------------------------------------


@pytest.mark.parametrize("kind", [BUY, REFUND])
async def test_payment_over_a_wrong_typed_journal_is_storage_corrupt_and_changes_nothing(
    store: Store, kind: str
) -> None:
    await pay(store, "ev1")
    await store.redis.set(keys.journal("alice"), "planted")
    await assert_refused(store, ErrorCode.STORAGE_CORRUPT, pay(store, "ev2", kind))


@pytest.mark.parametrize(
    "key",
    [
        keys.wallet("alice"),
        keys.purchases("alice"),
        keys.payment_seen("ev2"),
        keys.user_payment("alice", "ev2"),
    ],
    ids=["wallet", "purchases", "payment record", "user's payment record"],
)
async def test_payment_over_a_wrong_typed_key_it_reads_is_storage_corrupt_and_changes_nothing(
    store: Store, key: str
) -> None:
    if key == keys.user_payment("alice", "ev2") and not store.payments_across_slots:
        pytest.skip("only the steps across slots read the user's payment record")
    await pay(store, "ev1")
    if key.endswith(":payment:ev2"):
        await store.redis.hset(key, "planted", "1")  # a hash where a string belongs
    else:
        await store.redis.set(key, "planted")
    await assert_refused(store, ErrorCode.STORAGE_CORRUPT, pay(store, "ev2"))
