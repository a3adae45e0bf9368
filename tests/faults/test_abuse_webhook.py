"""The payment webhook under attack and disorder: forged, replayed and re-ordered
events, amounts slipped into the body, a refund of coins already gifted. Coins only
ever come from the server's price list, each event counts once, and the ledger
balances after all of it."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from gifting_server.auth import Role, sign_webhook
from tests.api import assert_error
from tests.conftest import WEBHOOK_SECRET
from tests.factories import auth, post_webhook
from tests.faults import (
    assert_reconciled,
    go_live,
    journal,
    money_state,
    purchase,
    refund,
    send_gift,
)
from tests.faults.conftest import Serve

WEBHOOK = "/v1/payments/webhook"


@pytest.fixture
async def http(redis_url: str, serve: Serve) -> AsyncIterator[httpx.AsyncClient]:
    server = serve(redis_url)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def coins_of(http: httpx.AsyncClient, user: str) -> tuple[int, int]:
    wallet = (await http.get("/v1/wallet", headers=auth(user))).json()
    return wallet["coins"], wallet["owed"]


def signed(
    body: dict[str, Any], secret: str = WEBHOOK_SECRET, at: int | None = None
) -> dict[str, str]:
    raw = orjson.dumps(body)
    stamp = int(time.time()) if at is None else at
    return {"Gifting-Signature": sign_webhook(secret, raw, stamp)}


async def test_forged_webhooks_are_refused_and_credit_nothing(
    http: httpx.AsyncClient, shared_client: Redis
) -> None:
    body = dict(purchase("forged", "mallory", "coins_50000"))
    raw = orjson.dumps(body)
    genuine = dict(purchase("genuine", "mallory"))
    forgeries = {
        "signed with a guessed secret": signed(body, "guessed-secret-0123456789abcdef0123"),
        "a genuine signature of another body": signed(genuine),
        "no signature": {},
        "a signature without a timestamp": {"Gifting-Signature": "v1=" + "0" * 64},
    }
    before = await money_state(shared_client)
    for name, headers in forgeries.items():
        response = await http.post(WEBHOOK, content=raw, headers=headers)
        assert_error(response, 401, "invalid_signature")
        assert await money_state(shared_client) == before, name
    assert await coins_of(http, "mallory") == (0, 0)


async def test_a_captured_webhook_replayed_credits_once_and_not_at_all_when_stale(
    http: httpx.AsyncClient, shared_client: Redis
) -> None:
    raw = orjson.dumps(purchase("captured", "alice"))
    headers = signed(dict(purchase("captured", "alice")))
    first = await http.post(WEBHOOK, content=raw, headers=headers)
    assert first.json()["status"] == "applied"
    before = await money_state(shared_client)
    for _ in range(3):  # replayed within the window: the same answer, nothing more
        again = await http.post(WEBHOOK, content=raw, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json() == {**first.json(), "status": "duplicate"}
    assert await money_state(shared_client) == before

    # A captured request for an event never delivered, replayed after the window.
    late = dict(purchase("captured-late", "alice"))
    stale = signed(late, at=int(time.time()) - 301)
    response = await http.post(WEBHOOK, content=orjson.dumps(late), headers=stale)
    assert_error(response, 401, "invalid_signature")
    assert await money_state(shared_client) == before
    assert await coins_of(http, "alice") == (100, 0)


async def test_a_refund_before_its_purchase_is_refused_then_applies_after_it(
    http: httpx.AsyncClient, shared_client: Redis
) -> None:
    before = await money_state(shared_client)
    early = await post_webhook(http, dict(refund("refund-1", "alice", "coins_500")))
    assert_error(early, 409, "nothing_to_refund")
    assert await money_state(shared_client) == before

    bought = await post_webhook(http, dict(purchase("buy-1", "alice", "coins_500")))
    assert bought.json()["credited"] == 500
    redelivered = await post_webhook(http, dict(refund("refund-1", "alice", "coins_500")))
    assert redelivered.status_code == 200, redelivered.text
    assert (redelivered.json()["status"], redelivered.json()["clawed_back"]) == ("applied", 500)
    assert await coins_of(http, "alice") == (0, 0)
    twice = await post_webhook(http, dict(refund("refund-2", "alice", "coins_500")))
    assert_error(twice, 409, "nothing_to_refund")  # one purchase, one refund
    await assert_reconciled(shared_client)


async def test_amounts_in_the_body_are_ignored_for_the_price_list(
    http: httpx.AsyncClient, shared_client: Redis
) -> None:
    body = {
        **purchase("inflated", "alice", "coins_100"),
        "coins": 1_000_000,
        "amount": 1_000_000,
        "credited": 1_000_000,
        "price": {"amount": 1, "currency": "USD"},
        "package": {"id": "coins_100", "coins": 1_000_000},
    }
    response = await post_webhook(http, body)
    assert response.status_code == 200, response.text
    assert response.json()["credited"] == 100
    [entry] = await journal(shared_client)
    assert (entry["type"], entry["coins"], entry["package"]) == ("purchase", "100", "coins_100")
    bad = {**purchase("made-up", "alice", "coins_1000000"), "coins": 1_000_000}
    assert_error(await post_webhook(http, bad), 404, "unknown_package")
    assert await coins_of(http, "alice") == (100, 0)


async def test_a_refund_of_gifted_coins_claws_back_the_rest_and_records_a_debt(
    http: httpx.AsyncClient, shared_client: Redis
) -> None:
    await go_live(http, "s1")
    assert (await post_webhook(http, dict(purchase("buy", "alice", "coins_500")))).is_success
    assert (await send_gift(http, "alice", "spend", "hand_hearts", 3)).is_success  # 300 coins

    refunded = await post_webhook(http, dict(refund("chargeback", "alice", "coins_500")))
    assert refunded.status_code == 200, refunded.text
    assert (refunded.json()["clawed_back"], refunded.json()["owed"]) == (200, 300)
    assert await coins_of(http, "alice") == (0, 300)
    streamer = await http.get("/v1/wallet", headers=auth("streamer1", Role.STREAMER))
    assert streamer.json()["diamonds"] == 150  # the streamer keeps what was gifted
    await assert_reconciled(shared_client)

    before = await money_state(shared_client)
    assert_error(await send_gift(http, "alice", "in-debt"), 402, "insufficient_funds")
    assert await money_state(shared_client) == before

    # The next purchases pay the debt first.
    small = await post_webhook(http, dict(purchase("buy-2", "alice", "coins_100")))
    assert (small.json()["credited"], small.json()["owed"]) == (0, 200)
    large = await post_webhook(http, dict(purchase("buy-3", "alice", "coins_500")))
    assert (large.json()["credited"], large.json()["owed"]) == (300, 0)
    assert await coins_of(http, "alice") == (300, 0)
    await assert_reconciled(shared_client)


async def test_the_payer_is_journaled_and_a_bad_payer_id_changes_nothing(
    http: httpx.AsyncClient, shared_client: Redis
) -> None:
    paid = await post_webhook(http, dict(purchase("by-card", "alice", payer_id="card_42")))
    assert paid.status_code == 200, paid.text
    unknown = await post_webhook(http, {**purchase("no-card", "bob"), "payer_id": None})
    assert unknown.status_code == 200, unknown.text
    [first, second] = await journal(shared_client)
    assert (first["payer"], "payer" in second) == ("card_42", False)
    before = await money_state(shared_client)
    for n, bad in enumerate(["../card", "", 42, ["card"], "x" * 65]):
        response = await post_webhook(http, {**purchase(f"bad-{n}", "carol"), "payer_id": bad})
        assert_error(response, 422, "invalid_request")
        assert "payer_id" in response.json()["error"]["message"]
    assert await money_state(shared_client) == before
