"""POST /v1/payments/webhook over real HTTP: signatures, exactly-once credit, refunds."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from gifting_server.auth import Role, sign_webhook
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store
from tests.api import assert_error, snapshot
from tests.conftest import WEBHOOK_SECRET
from tests.factories import auth, post_webhook, signed_webhook
from tests.ledger.support import journal_entries

WEBHOOK = "/v1/payments/webhook"


def purchase(
    event_id: str, user_id: str = "alice", package_id: str = "coins_100"
) -> dict[str, object]:
    return {
        "event_id": event_id,
        "type": "payment.succeeded",
        "user_id": user_id,
        "package_id": package_id,
    }


def refund(
    event_id: str, user_id: str = "alice", package_id: str = "coins_100"
) -> dict[str, object]:
    return {**purchase(event_id, user_id, package_id), "type": "payment.refunded"}


async def wallet_of(http: httpx.AsyncClient, user_id: str) -> dict[str, object]:
    response = await http.get("/v1/wallet", headers=auth(user_id))
    assert response.status_code == 200, response.text
    data: dict[str, object] = response.json()
    return data


async def journal_length(store: Store) -> int:
    return len(await journal_entries(store.redis))


async def test_purchase_credits_the_package_coins_and_ignores_amounts_in_the_body(
    store: Store, http: httpx.AsyncClient
) -> None:
    body = {**purchase("evt_1", package_id="coins_500"), "coins": 999999, "amount": 1}
    body["price"] = {"amount": 1, "currency": "USD"}
    response = await post_webhook(http, body)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "applied",
        "event_id": "evt_1",
        "user_id": "alice",
        "coins": 500,
        "credited": 500,
        "clawed_back": 0,
        "owed": 0,
    }
    assert (await wallet_of(http, "alice"))["coins"] == 500
    entries: Any = await store.redis.xrange(keys.journal("alice"))
    assert [e[1]["type"] for e in entries] == ["purchase"]
    assert entries[0][1]["coins"] == "500"


async def test_replayed_event_answers_200_again_and_credits_once(
    store: Store, http: httpx.AsyncClient
) -> None:
    first = await post_webhook(http, purchase("evt_replay"))
    again = await post_webhook(http, purchase("evt_replay"))
    assert first.status_code == again.status_code == 200
    assert first.json()["status"] == "applied"
    assert again.json() == {**first.json(), "status": "duplicate"}
    assert (await wallet_of(http, "alice"))["coins"] == 100
    assert await journal_length(store) == 1


async def test_twenty_concurrent_duplicates_credit_exactly_once(
    store: Store, http: httpx.AsyncClient
) -> None:
    raw, headers = signed_webhook(purchase("evt_burst"))
    responses = await asyncio.gather(
        *(http.post(WEBHOOK, content=raw, headers=headers) for _ in range(20))
    )
    assert [r.status_code for r in responses] == [200] * 20
    statuses = sorted(r.json()["status"] for r in responses)
    assert statuses == ["applied"] + ["duplicate"] * 19
    assert {r.json()["coins"] for r in responses} == {100}
    assert (await wallet_of(http, "alice"))["coins"] == 100
    assert await journal_length(store) == 1


async def test_same_event_id_with_other_content_is_an_idempotency_conflict(
    store: Store, http: httpx.AsyncClient
) -> None:
    assert (await post_webhook(http, purchase("evt_c"))).status_code == 200
    before = await snapshot(store.redis)
    response = await post_webhook(http, purchase("evt_c", package_id="coins_500"))
    assert_error(response, 409, "idempotency_conflict")
    assert await snapshot(store.redis) == before


def flip_one_byte(raw: bytes) -> bytes:
    index = raw.index(b"coins_100") + len("coins_")
    return raw[:index] + b"5" + raw[index + 1 :]  # coins_100 -> coins_500, same length


def header_with(signature: str) -> dict[str, str]:
    return {"Gifting-Signature": signature}


def now_s() -> int:
    return int(time.time())


BAD_SIGNATURES: dict[str, Callable[[bytes], tuple[bytes, dict[str, Any]]]] = {
    "body altered after signing": lambda raw: (
        flip_one_byte(raw),
        header_with(sign_webhook(WEBHOOK_SECRET, raw, now_s())),
    ),
    "wrong secret": lambda raw: (
        raw,
        header_with(sign_webhook("another-webhook-secret-0123456789abcdef", raw, now_s())),
    ),
    "missing header": lambda raw: (raw, {}),
    "empty header": lambda raw: (raw, header_with("")),
    "not key=value": lambda raw: (raw, header_with("garbage")),
    "no timestamp": lambda raw: (
        raw,
        header_with(sign_webhook(WEBHOOK_SECRET, raw, now_s()).split(",")[1]),
    ),
    "no v1": lambda raw: (raw, header_with(f"t={now_s()}")),
    "timestamp not a number": lambda raw: (raw, header_with("t=abc,v1=00")),
    "negative timestamp": lambda raw: (raw, header_with("t=-5,v1=00")),
    "float timestamp": lambda raw: (raw, header_with(f"t={now_s()}.5,v1=00")),
    "digest too short": lambda raw: (raw, header_with(f"t={now_s()},v1=abc")),
    "superscript digit timestamp": lambda raw: (raw, {"Gifting-Signature": b"t=\xb2,v1=00"}),
    # hmac.compare_digest raises TypeError on a str that is not ASCII
    "non-ASCII digest": lambda raw: (
        raw,
        {"Gifting-Signature": f"t={now_s()},v1=".encode() + b"\xe9" * 64},
    ),
    "301 s old": lambda raw: (raw, header_with(sign_webhook(WEBHOOK_SECRET, raw, now_s() - 301))),
    # ceil: however long the request takes (under a second), t stays more than 300 s ahead
    "301 s in the future": lambda raw: (
        raw,
        header_with(sign_webhook(WEBHOOK_SECRET, raw, math.ceil(time.time()) + 301)),
    ),
}


@pytest.mark.parametrize("name", list(BAD_SIGNATURES))
async def test_bad_signature_is_refused_and_changes_nothing(
    name: str, store: Store, http: httpx.AsyncClient
) -> None:
    raw, headers = BAD_SIGNATURES[name](orjson.dumps(purchase("evt_sig")))
    before = await snapshot(store.redis)
    response = await http.post(WEBHOOK, content=raw, headers=headers)
    assert_error(response, 401, "invalid_signature")
    assert await snapshot(store.redis) == before


@pytest.mark.parametrize("offset", [-299, 299])
async def test_timestamp_within_tolerance_is_accepted(
    offset: int, store: Store, http: httpx.AsyncClient
) -> None:
    # floor/ceil so that the request's own duration keeps |now - t| under 300 s
    stamp = math.ceil(time.time()) - 299 if offset < 0 else int(time.time()) + 299
    raw, headers = signed_webhook(purchase("evt_299"), at=stamp)
    response = await http.post(WEBHOOK, content=raw, headers=headers)
    assert response.status_code == 200, response.text
    assert (await wallet_of(http, "alice"))["coins"] == 100


async def test_unknown_package_is_404_and_credits_nothing(
    store: Store, http: httpx.AsyncClient
) -> None:
    before = await snapshot(store.redis)
    response = await post_webhook(http, purchase("evt_u", package_id="coins_999999"))
    assert_error(response, 404, "unknown_package")
    assert await snapshot(store.redis) == before
    assert (await wallet_of(http, "alice"))["coins"] == 0


async def test_refund_before_any_purchase_is_409_and_changes_nothing(
    store: Store, http: httpx.AsyncClient
) -> None:
    before = await snapshot(store.redis)
    assert_error(await post_webhook(http, refund("evt_r0")), 409, "nothing_to_refund")
    assert await snapshot(store.redis) == before


async def test_refund_of_another_package_or_twice_is_409(
    store: Store, http: httpx.AsyncClient
) -> None:
    assert (await post_webhook(http, purchase("evt_p"))).status_code == 200
    other = await post_webhook(http, refund("evt_r1", package_id="coins_500"))
    assert_error(other, 409, "nothing_to_refund")
    first = await post_webhook(http, refund("evt_r2"))
    assert first.status_code == 200, first.text
    assert first.json()["clawed_back"] == 100
    before = await snapshot(store.redis)
    assert_error(await post_webhook(http, refund("evt_r3")), 409, "nothing_to_refund")
    assert await snapshot(store.redis) == before


async def test_refund_after_gifting_claws_back_the_rest_and_records_the_debt(
    store: Store, http: httpx.AsyncClient
) -> None:
    created = await http.post(
        "/v1/streams", json={"stream_id": "s1"}, headers=auth("streamer1", Role.STREAMER)
    )
    assert created.status_code == 201, created.text
    assert (await post_webhook(http, purchase("evt_buy"))).status_code == 200
    gift = {"gift_id": "rose", "count": 70, "idempotency_key": "g1"}
    sent = await http.post("/v1/streams/s1/gifts", json=gift, headers=auth("alice"))
    assert sent.status_code == 200, sent.text
    assert sent.json()["coins"] == 30

    refunded = await post_webhook(http, refund("evt_refund"))
    assert refunded.status_code == 200, refunded.text
    assert refunded.json() == {
        "status": "applied",
        "event_id": "evt_refund",
        "user_id": "alice",
        "coins": 0,
        "credited": 0,
        "clawed_back": 30,
        "owed": 70,
    }
    wallet = await wallet_of(http, "alice")
    assert (wallet["coins"], wallet["owed"]) == (0, 70)
    # the streamer keeps what was gifted: the platform carries the debt
    assert (await wallet_of(http, "streamer1"))["diamonds"] == 35
    gift = {"gift_id": "rose", "count": 1, "idempotency_key": "g2"}
    broke = await http.post("/v1/streams/s1/gifts", json=gift, headers=auth("alice"))
    assert_error(broke, 402, "insufficient_funds")

    repaid = await post_webhook(http, purchase("evt_buy2", package_id="coins_500"))
    assert repaid.status_code == 200, repaid.text
    assert (repaid.json()["credited"], repaid.json()["coins"], repaid.json()["owed"]) == (
        430,
        430,
        0,
    )
    wallet = await wallet_of(http, "alice")
    assert (wallet["coins"], wallet["owed"]) == (430, 0)


async def test_small_purchase_pays_part_of_the_debt(store: Store, http: httpx.AsyncClient) -> None:
    await http.post("/v1/streams", json={"stream_id": "s1"}, headers=auth("s", Role.STREAMER))
    assert (await post_webhook(http, purchase("evt_a", package_id="coins_500"))).status_code == 200
    gift = {"gift_id": "money_gun", "count": 1, "idempotency_key": "g"}
    sent = await http.post("/v1/streams/s1/gifts", json=gift, headers=auth("alice"))
    assert sent.status_code == 200, sent.text
    refunded = await post_webhook(http, refund("evt_b", package_id="coins_500"))
    assert refunded.json()["owed"] == 500
    partial = await post_webhook(http, purchase("evt_c"))
    assert (partial.json()["credited"], partial.json()["owed"]) == (0, 400)
    wallet = await wallet_of(http, "alice")
    assert (wallet["coins"], wallet["owed"]) == (0, 400)
