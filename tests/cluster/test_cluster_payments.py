"""Payments on a cluster: the event id claimed in the global record's slot, the coins
applied in the user's (another master), the record marked applied; exactly once
through retries, concurrent duplicates and a crash between the steps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys, payments, wallet
from gifting_server.ledger.payments import PaymentResult
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import Store, connect
from gifting_server.local_cluster import LocalCluster
from tests.conftest import ServerThread, make_settings
from tests.factories import post_webhook

pytestmark = pytest.mark.cluster
BUY, REFUND = "payment.succeeded", "payment.refunded"


@pytest.fixture
async def store(cluster_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(await connect(cluster_url, 2.0), make_settings(cluster_url, tmp_path))
    assert store.payments_across_slots
    yield store
    await store.close()


def user_off_the_record_master(cluster: LocalCluster, event_id: str) -> str:
    """A user whose keys live on another master than the event's global record."""
    record_master = cluster.master_for_key(keys.payment_seen(event_id)).port
    for n in range(100):
        if cluster.master_for_key(keys.wallet(f"u{n}")).port != record_master:
            return f"u{n}"
    raise AssertionError("every user on one master")


async def coins(store: Store, user_id: str) -> int:
    return int((await wallet.read_wallet(store, user_id))["coins"])


async def assert_reconciles(store: Store) -> None:
    report = await reconcile(store.redis, store.settings.economy.creator_share_bps)
    assert report.ok, report.format()
    assert report.pending_payments == []


async def test_a_purchase_and_its_refund_on_two_masters(
    redis_cluster: LocalCluster, store: Store
) -> None:
    user = user_off_the_record_master(redis_cluster, "ev1")
    bought = await payments.apply_payment(store, user, "ev1", BUY, "coins_100")
    assert bought == PaymentResult(100, 100, 0, 0, replayed=False)
    refunded = await payments.apply_payment(store, user, "rf1", REFUND, "coins_100")
    assert refunded == PaymentResult(0, 0, 100, 0, replayed=False)
    assert await coins(store, user) == 0
    assert await store.redis.get(keys.payment_seen("ev1")) == f"{user}|{BUY}|coins_100|100|100|0|0"
    assert await store.redis.get(keys.user_payment(user, "ev1")) == (
        f"{user}|{BUY}|coins_100|100|100|0|0"
    )
    await assert_reconciles(store)


async def test_a_redelivered_event_answers_the_same_and_credits_once(
    redis_cluster: LocalCluster, store: Store
) -> None:
    user = user_off_the_record_master(redis_cluster, "ev1")
    first = await payments.apply_payment(store, user, "ev1", BUY, "coins_500")
    again = await payments.apply_payment(store, user, "ev1", BUY, "coins_500")
    assert again == PaymentResult(first.coins, first.credited, 0, 0, replayed=True)
    assert await coins(store, user) == 500
    await assert_reconciles(store)


async def test_the_same_event_for_another_user_is_a_conflict_and_credits_no_one(
    redis_cluster: LocalCluster, store: Store
) -> None:
    user = user_off_the_record_master(redis_cluster, "ev1")
    await payments.apply_payment(store, user, "ev1", BUY, "coins_100")
    with pytest.raises(GiftingError) as refused:
        await payments.apply_payment(store, "mallory", "ev1", BUY, "coins_100")
    assert refused.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert (await wallet.read_wallet(store, "mallory"))["coins"] == 0
    assert not await store.redis.exists(keys.user_payment("mallory", "ev1"))
    await assert_reconciles(store)


async def test_a_refused_refund_frees_the_event_id(
    redis_cluster: LocalCluster, store: Store
) -> None:
    user = user_off_the_record_master(redis_cluster, "rf1")
    with pytest.raises(GiftingError) as refused:
        await payments.apply_payment(store, user, "rf1", REFUND, "coins_100")
    assert refused.value.code is ErrorCode.NOTHING_TO_REFUND
    assert not await store.redis.exists(keys.payment_seen("rf1"))


async def test_concurrent_duplicates_of_one_event_credit_exactly_once(
    redis_cluster: LocalCluster, store: Store
) -> None:
    user = user_off_the_record_master(redis_cluster, "ev1")
    results = await asyncio.gather(
        *(payments.apply_payment(store, user, "ev1", BUY, "coins_100") for _ in range(20))
    )
    assert [r.replayed for r in results].count(False) == 1
    assert {(r.coins, r.credited) for r in results} == {(100, 100)}
    assert await coins(store, user) == 100
    await assert_reconciles(store)


async def test_a_crash_after_the_claim_is_finished_by_the_providers_retry(
    redis_cluster: LocalCluster, store: Store
) -> None:
    user = user_off_the_record_master(redis_cluster, "ev1")
    fingerprint = f"{user}|{BUY}|coins_100"
    await store.run_script("claim_payment", [keys.payment_seen("ev1")], [fingerprint])
    assert await coins(store, user) == 0
    report = await reconcile(store.redis, store.settings.economy.creator_share_bps)
    assert report.ok and report.pending_payments == [keys.payment_seen("ev1")]
    with pytest.raises(GiftingError) as refused:  # the claim holds the event id
        await payments.apply_payment(store, "mallory", "ev1", BUY, "coins_100")
    assert refused.value.code is ErrorCode.IDEMPOTENCY_CONFLICT

    retried = await payments.apply_payment(store, user, "ev1", BUY, "coins_100")
    assert retried == PaymentResult(100, 100, 0, 0, replayed=False)
    again = await payments.apply_payment(store, user, "ev1", BUY, "coins_100")
    assert again.replayed
    assert await coins(store, user) == 100
    await assert_reconciles(store)


async def test_a_crash_before_the_mark_is_answered_from_the_users_record(
    redis_cluster: LocalCluster, store: Store
) -> None:
    """Applied in the user's slot, the global record still pending: a retry credits
    nothing more and marks the record."""
    user = user_off_the_record_master(redis_cluster, "ev1")
    fingerprint = f"{user}|{BUY}|coins_100"
    await payments.apply_payment(store, user, "ev1", BUY, "coins_100")
    await store.redis.set(keys.payment_seen("ev1"), f"{fingerprint}|pending")
    again = await payments.apply_payment(store, user, "ev1", BUY, "coins_100")
    assert again == PaymentResult(100, 100, 0, 0, replayed=True)
    assert await coins(store, user) == 100
    assert await store.redis.get(keys.payment_seen("ev1")) == f"{fingerprint}|100|100|0|0"
    await assert_reconciles(store)


async def test_the_webhook_over_http_on_a_cluster(
    redis_cluster: LocalCluster, store: Store, cluster_url: str, tmp_path: Path
) -> None:
    user = user_off_the_record_master(redis_cluster, "wh1")
    body = {"event_id": "wh1", "user_id": user, "package_id": "coins_100", "type": BUY}
    with ServerThread(make_settings(cluster_url, tmp_path)) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            first = await post_webhook(http, body)
            again = await post_webhook(http, body)
            conflict = await post_webhook(http, body | {"user_id": "mallory"})
    assert first.status_code == 200, first.text
    assert (first.json()["status"], first.json()["coins"]) == ("applied", 100)
    assert (again.status_code, again.json()["status"]) == (200, "duplicate")
    assert conflict.status_code == 409, conflict.text
    assert await coins(store, user) == 100
    await assert_reconciles(store)
