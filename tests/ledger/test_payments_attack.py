"""Payments across slots (`Store.payments_across_slots`, on one Redis) attacked
between their steps: a replica that falls short at each step, a refusal racing a
success of the same event. Every event is credited once, to one user, and
`reconcile` agrees."""

from __future__ import annotations

from pathlib import Path

import pytest

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys, payments, wallet
from gifting_server.ledger.payments import PaymentResult
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import Store
from tests.ledger.test_replica_ack import Replicated, acked_store, replicated  # noqa: F401

BUY, REFUND = "payment.succeeded", "payment.refunded"


async def coins(store: Store, user_id: str) -> int:
    return int((await wallet.read_wallet(store, user_id))["coins"])


async def assert_reconciles(store: Store) -> None:
    report = await reconcile(store.redis, store.settings.economy.creator_share_bps)
    assert report.ok, report.format()
    assert report.pending_payments == []


def fingerprint(user: str, kind: str = BUY, package: str = "coins_100") -> str:
    return f"{user}|{kind}|{package}"


async def claim(store: Store, user: str, event: str, kind: str = BUY) -> None:
    await store.run_script("claim_payment", [keys.payment_seen(event)], [fingerprint(user, kind)])


async def apply_in_users_slot(store: Store, user: str, event: str, kind: str = BUY) -> None:
    """Step 2 alone, as `payments.apply_payment` runs it."""
    args = [user, event, kind, "coins_100", 100, fingerprint(user, kind), store.clock(), ""]
    user_keys = [keys.wallet(user), keys.purchases(user), keys.journal(user)]
    await store.run_script("recharge", [keys.user_payment(user, event), *user_keys], args)


@pytest.mark.parametrize("short_at", ["claim", "apply", "mark"])
async def test_a_replica_short_at_any_step_leaves_an_event_the_redelivery_credits_once(
    replicated: Replicated,  # noqa: F811
    tmp_path: Path,
    short_at: str,
) -> None:
    """The steps before `short_at` ran and reached the replica; then the replica
    stops: the webhook is answered service_unavailable, and the provider's
    redelivery, once the replica is back, credits the event once and marks it."""
    store = await acked_store(replicated, tmp_path)
    store.payments_across_slots = True
    try:
        if short_at in ("apply", "mark"):
            await claim(store, "alice", "ev1")
        if short_at == "mark":
            await apply_in_users_slot(store, "alice", "ev1")
        replicated.wait_synced()
        replicated.replica.suspend()
        try:
            with pytest.raises(GiftingError) as short:
                await payments.apply_payment(store, "alice", "ev1", BUY, "coins_100")
            assert short.value.code is ErrorCode.SERVICE_UNAVAILABLE
        finally:
            replicated.replica.resume()
        replicated.wait_synced()
        with pytest.raises(GiftingError) as held:  # the claim holds the event id
            await payments.apply_payment(store, "mallory", "ev1", BUY, "coins_100")
        assert held.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
        again = await payments.apply_payment(store, "alice", "ev1", BUY, "coins_100")
        assert (again.coins, again.credited) == (100, 100)
        # The WAIT after any step counts the writes before it (Redis 7.0), so the
        # shortfall came at the first step; step 2 ran before only for "mark".
        assert again.replayed is (short_at == "mark")
        redelivered = await payments.apply_payment(store, "alice", "ev1", BUY, "coins_100")
        assert redelivered == PaymentResult(100, 100, 0, 0, replayed=True)
        assert await coins(store, "alice") == 100
        await assert_reconciles(store)
    finally:
        await store.close()


async def test_a_refused_refund_cannot_free_the_event_a_duplicate_is_applying(
    store: Store,
) -> None:
    """Two deliveries of one refund: the first is refused (the purchase has not come
    yet) and, before it releases its claim, the purchase lands and the second
    delivery claws the coins back. The event id then names a payment that was
    applied: the same event for another user must still be refused."""
    store.payments_across_slots = True
    await payments.apply_payment(store, "bob", "bob-buy", BUY, "coins_100")
    await claim(store, "alice", "rf1", REFUND)  # the first delivery
    with pytest.raises(GiftingError) as refused:
        await apply_in_users_slot(store, "alice", "rf1", REFUND)
    assert refused.value.code is ErrorCode.NOTHING_TO_REFUND
    await payments.apply_payment(store, "alice", "alice-buy", BUY, "coins_100")
    await claim(store, "alice", "rf1", REFUND)  # the second delivery, same content
    await apply_in_users_slot(store, "alice", "rf1", REFUND)  # clawed back from alice
    # The first delivery now releases its claim; the second has not marked it yet.
    await store.run_script(
        "release_payment_claim", [keys.payment_seen("rf1")], [fingerprint("alice", REFUND)]
    )
    with pytest.raises(GiftingError) as other:
        await payments.apply_payment(store, "bob", "rf1", REFUND, "coins_100")
    assert other.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert await coins(store, "bob") == 100
    # The second delivery finishes: its redelivery marks the record.
    done = await payments.apply_payment(store, "alice", "rf1", REFUND, "coins_100")
    assert done == PaymentResult(0, 0, 100, 0, replayed=True)
    await assert_reconciles(store)
