"""An id or key with a trailing newline is not another id: over real HTTP and WebSocket,
"demo\\n" cannot go live beside "demo", "k\\n" is no second idempotency key after "k",
"e\\n" no second payment event after "e", and "u\\n" no new wallet."""

from __future__ import annotations

import time

import httpx
import jwt

from gifting_server.auth import ISSUER, Role
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store
from tests.api import assert_error, snapshot
from tests.conftest import SECRET, ServerThread
from tests.factories import auth, fund, live_stream, post_webhook, token
from tests.hub.wsclient import WsClient

STREAMER = auth("streamer1", Role.STREAMER)
ALICE = auth("alice")
LONGEST = "s" * 64


async def coins(http: httpx.AsyncClient, headers: dict[str, str]) -> int:
    wallet = await http.get("/v1/wallet", headers=headers)
    assert wallet.status_code == 200, wallet.text
    value: int = wallet.json()["coins"]
    return value


async def test_a_stream_id_with_a_trailing_newline_is_not_another_stream(
    http: httpx.AsyncClient, store: Store
) -> None:
    assert (await http.post("/v1/streams", json={"stream_id": "demo"}, headers=STREAMER)).is_success
    await fund(store, "alice")
    before = await snapshot(store.redis)
    for stream_id in ("demo\n", LONGEST + "\n"):  # the second is 65 characters
        going_live = await http.post("/v1/streams", json={"stream_id": stream_id}, headers=STREAMER)
        assert_error(going_live, 422, "invalid_request")
    gift = {"gift_id": "rose", "count": 1, "idempotency_key": "k1"}
    for path in ("demo%0A", LONGEST + "%0A"):
        sent = await http.post(f"/v1/streams/{path}/gifts", json=gift, headers=ALICE)
        assert_error(sent, 422, "invalid_request")
        assert_error(await http.get(f"/v1/streams/{path}"), 422, "invalid_request")
        assert_error(await http.get(f"/v1/streams/{path}/leaderboard"), 422, "invalid_request")
        ended = await http.post(f"/v1/streams/{path}/end", headers=STREAMER)
        assert_error(ended, 422, "invalid_request")
    assert await snapshot(store.redis) == before
    # the longest id is still an id
    longest = await http.post("/v1/streams", json={"stream_id": LONGEST}, headers=STREAMER)
    assert longest.status_code == 201, longest.text


async def test_an_idempotency_key_with_a_trailing_newline_sends_no_second_gift(
    http: httpx.AsyncClient, store: Store
) -> None:
    await fund(store, "alice")
    await live_stream(store, "s1")
    gift = {"gift_id": "rose", "count": 1}
    first = await http.post(
        "/v1/streams/s1/gifts", json={**gift, "idempotency_key": "k"}, headers=ALICE
    )
    assert first.status_code == 200, first.text
    before = await snapshot(store.redis)
    for key in ("k\n", "k" * 128 + "\n"):
        again = await http.post(
            "/v1/streams/s1/gifts", json={**gift, "idempotency_key": key}, headers=ALICE
        )
        assert_error(again, 422, "invalid_request")
    assert await snapshot(store.redis) == before
    assert await coins(http, ALICE) == 99


async def test_a_payment_event_id_with_a_trailing_newline_credits_nothing_again(
    http: httpx.AsyncClient, store: Store
) -> None:
    payment = {"type": "payment.succeeded", "user_id": "alice", "package_id": "coins_100"}
    first = await post_webhook(http, {**payment, "event_id": "e"})
    assert first.status_code == 200, first.text
    before = await snapshot(store.redis)
    again = await post_webhook(http, {**payment, "event_id": "e\n"})
    assert_error(again, 422, "invalid_request")
    assert await snapshot(store.redis) == before
    assert await coins(http, ALICE) == 100


async def test_a_user_id_with_a_trailing_newline_gets_no_wallet(
    http: httpx.AsyncClient, store: Store
) -> None:
    payment = {"type": "payment.succeeded", "event_id": "e1", "package_id": "coins_100"}
    for user_id in ("u\n", "u" * 64 + "\n"):
        paid = await post_webhook(http, {**payment, "user_id": user_id})
        assert_error(paid, 422, "invalid_request")
    payer = await post_webhook(http, {**payment, "user_id": "u", "payer_id": "p\n"})
    assert_error(payer, 422, "invalid_request")
    assert await snapshot(store.redis) == {}
    assert not await store.redis.exists(keys.wallet("u\n"))


async def test_over_websocket_a_trailing_newline_is_refused_and_sends_nothing(
    server: ServerThread, store: Store
) -> None:
    await fund(store, "alice")
    await live_stream(store, "demo")
    async with await WsClient.open(server.url, token("alice")) as client:
        assert (await client.gift("demo", id="k"))["type"] == "ack"
        before = await snapshot(store.redis)
        for fields in (
            {"id": "k\n", "stream_id": "demo", "gift_id": "rose"},
            {"id": "k2", "stream_id": "demo\n", "gift_id": "rose"},
            {"id": "k3", "stream_id": "demo", "gift_id": "rose\n"},
        ):
            await client.send({"type": "gift", "count": 1, **fields})
            refused = await client.next_of("error")
            assert refused["code"] == "invalid_request", refused
        await client.send({"type": "subscribe", "stream_id": "demo\n"})
        refused = await client.next_of("error")
        assert refused["code"] == "invalid_request", refused
        await client.barrier()
        assert not [m for m in client.received if m["type"] in ("ack", "subscribed")][1:]
        assert await snapshot(store.redis) == before
        client.assert_no_traceback()
    assert int(await store.redis.hget(keys.wallet("alice"), "coins")) == 99


async def test_a_display_name_that_is_not_utf8_still_gifts_and_shows(
    server: ServerThread, store: Store
) -> None:
    """Tokens minted by an integrator's backend may carry a name with a lone surrogate
    (JavaScript strings can hold one; JSON escapes it as \\ud800): the gift still
    goes through, and its event carries the name with U+FFFD in its place."""
    await fund(store, "alice")
    await live_stream(store, "s1")
    claims = {"iss": ISSUER, "sub": "alice", "role": "viewer", "adult": True}
    raw = jwt.encode(
        {**claims, "name": "Al\ud800ice", "exp": int(time.time()) + 600}, SECRET, "HS256"
    )
    headers = {"Authorization": f"Bearer {raw}"}
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
        await WsClient.open(server.url, token("bob")) as watcher,
    ):
        await watcher.subscribe("s1")
        body = {"gift_id": "rose", "count": 1, "idempotency_key": "named"}
        sent = await http.post("/v1/streams/s1/gifts", json=body, headers=headers)
        assert sent.status_code == 200, sent.text
        [event] = await watcher.events_until(lambda e: e["event_id"] == sent.json()["event_id"])
        assert event["sender"] == {"id": "alice", "name": "Al\ufffdice"}
        board = await http.get("/v1/streams/s1/leaderboard")
        assert board.json()["entries"][0]["name"] == "Al\ufffdice"
