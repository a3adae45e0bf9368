"""Nobody acts where they don't belong: forged, expired, tampered tokens, tokens of
the wrong role or for another stream, identities slipped into a body field, a
viewer reaching for another's wallet or cash-out. Each is refused (or the spoofed
field ignored) over real HTTP and WebSocket, and nothing changes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from redis.asyncio import Redis
from websockets.exceptions import ConnectionClosed

from gifting_server.auth import ISSUER, Role, issue_token
from tests.api import assert_error
from tests.conftest import SECRET, ServerThread
from tests.factories import auth, token
from tests.faults import buy, go_live, journal, money_state, send_gift
from tests.faults.conftest import Serve
from tests.hub.wsclient import Closed, WsClient

OTHER_SECRET = "someone-elses-secret-0123456789abcdef0123"


def bearer(raw: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {raw}"}


def claims_token(**changes: Any) -> str:
    """A token signed with the server's secret whose claims the test chose."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "alice",
        "role": "viewer",
        "adult": True,
        "iat": now,
        "exp": now + 3600,
    }
    claims.update(changes)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, SECRET, "HS256")


def swap_payload(real: str, fake: str) -> str:
    """`real`'s header and signature around `fake`'s claims."""
    head, _, signature = real.split(".")
    return f"{head}.{fake.split('.')[1]}.{signature}"


BAD_TOKENS: dict[str, Callable[[], str]] = {
    "signed with another secret": lambda: issue_token(OTHER_SECRET, "alice", Role.VIEWER),
    "expired": lambda: issue_token(
        SECRET, "alice", Role.VIEWER, adult=True, ttl_s=60, now=time.time() - 3600
    ),
    "unsigned (alg none)": lambda: jwt.encode(
        {"iss": ISSUER, "sub": "alice", "role": "viewer", "exp": int(time.time()) + 60},
        key=None,
        algorithm="none",
    ),
    "claims swapped under a valid signature": lambda: swap_payload(
        token("mallory"), token("alice")
    ),
    "another issuer": lambda: claims_token(iss="someone-else"),
    "a subject that is a path": lambda: claims_token(sub="../alice"),
    "an unknown role": lambda: claims_token(role="root"),
    "no expiry": lambda: claims_token(exp=None),
    "garbage": lambda: "not.a.token",
}


@dataclass
class World:
    """s1 (streamer1, with diamonds to cash out) and s2 (streamer2) are live;
    alice and bob hold coins."""

    server: ServerThread
    http: httpx.AsyncClient
    redis: Redis


@pytest.fixture
async def world(redis_url: str, shared_client: Redis, serve: Serve) -> AsyncIterator[World]:
    server = serve(redis_url, economy={"holding_period_days": 0})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await go_live(http, "s1", "streamer1")
        await go_live(http, "s2", "streamer2")
        await buy(http, "alice", "coins_5000")
        await buy(http, "bob", "coins_1000")
        # 4000 coins: 2000 diamonds for streamer1, to cash out at once
        earn = await send_gift(http, "alice", "earn", "hand_hearts", 40)
        assert earn.status_code == 200, earn.text
        yield World(server, http, shared_client)


def attempts(world: World) -> dict[str, Callable[[dict[str, str]], Any]]:
    """Every mutating call, made with the headers it is given."""
    http = world.http
    return {
        "gift": lambda h: http.post(
            "/v1/streams/s1/gifts",
            json={"gift_id": "rose", "count": 1, "idempotency_key": "abuse"},
            headers=h,
        ),
        "daily limit": lambda h: http.put(
            "/v1/wallet/limits", json={"daily_coin_limit": 1}, headers=h
        ),
        "cash-out": lambda h: http.post(
            "/v1/cashouts", json={"diamonds": 2000, "idempotency_key": "abuse"}, headers=h
        ),
        "go live": lambda h: http.post("/v1/streams", json={"stream_id": "s9"}, headers=h),
        "end stream": lambda h: http.post("/v1/streams/s1/end", headers=h),
        "wallet": lambda h: http.get("/v1/wallet", headers=h),
    }


async def test_a_bad_token_is_refused_everywhere_and_changes_nothing(
    world: World, subtests: pytest.Subtests
) -> None:
    before = await money_state(world.redis)
    for case, make_token in BAD_TOKENS.items():
        with subtests.test(case):
            raw = make_token()
            for name, call in attempts(world).items():
                response = await call(bearer(raw))
                assert_error(response, 401, "unauthorized")
                assert "Traceback" not in response.text, name
            async with await WsClient.open(world.server.url, raw) as client:
                assert (await client.closed())[0] == 4001
                client.assert_no_traceback()
            assert await money_state(world.redis) == before


# (token, call) → the refusal: roles that may not do it, or a stream that is not theirs.
WRONG_ROLE: list[tuple[str, Role, str, int, str]] = [
    ("streamer1", Role.STREAMER, "gift", 403, "forbidden"),
    ("overlay1", Role.OVERLAY, "gift", 403, "forbidden"),
    ("admin1", Role.ADMIN, "gift", 403, "forbidden"),
    ("alice", Role.VIEWER, "cash-out", 403, "forbidden"),
    ("alice", Role.VIEWER, "go live", 403, "forbidden"),
    ("alice", Role.VIEWER, "end stream", 403, "forbidden"),
    ("overlay1", Role.OVERLAY, "wallet", 403, "forbidden"),
    ("streamer1", Role.STREAMER, "daily limit", 403, "forbidden"),
    ("streamer2", Role.STREAMER, "end stream", 403, "not_stream_owner"),
]


async def test_a_token_of_the_wrong_role_or_stream_is_refused_and_changes_nothing(
    world: World, subtests: pytest.Subtests
) -> None:
    before = await money_state(world.redis)
    for user, role, call, status, code in WRONG_ROLE:
        with subtests.test(f"{role} {user}: {call}"):
            extra = {"stream_id": "s1"} if role is Role.OVERLAY else {}
            response = await attempts(world)[call](auth(user, role, **extra))
            assert_error(response, status, code)
            assert await money_state(world.redis) == before
    assert (await world.http.get("/v1/streams/s1")).json()["status"] == "live"


async def test_going_live_on_another_streamers_stream_id_is_refused(world: World) -> None:
    taken = await world.http.post(
        "/v1/streams", json={"stream_id": "s1"}, headers=auth("streamer2", Role.STREAMER)
    )
    assert_error(taken, 409, "stream_id_taken")
    assert (await world.http.get("/v1/streams/s1")).json()["streamer_id"] == "streamer1"


async def test_an_overlay_token_for_another_stream_cannot_follow_or_gift(world: World) -> None:
    overlay = token("overlay2", Role.OVERLAY, stream_id="s2")
    async with await WsClient.open(world.server.url, overlay) as client:
        await client.send({"type": "subscribe", "stream_id": "s1"})
        assert (await client.next_of("error"))["code"] == "forbidden"
        answer = await client.gift("s2", id="overlay-gift")
        assert (answer["type"], answer["code"]) == ("error", "forbidden")
        await client.subscribe("s2")  # its own stream is fine
        client.assert_no_traceback()


SPOOFED = {
    "user_id": "bob",
    "sender": "bob",
    "sender_id": "bob",
    "from": "bob",
    "name": "Bob",
    "streamer_id": "streamer2",
    "coins": 0,
    "price": 0,
}


async def test_identity_in_a_body_field_is_ignored(world: World) -> None:
    http, redis = world.http, world.redis
    bob_before = await http.get("/v1/wallet", headers=auth("bob"))

    gift = {"gift_id": "finger_heart", "count": 2, "idempotency_key": "spoof", **SPOOFED}
    sent = await http.post("/v1/streams/s1/gifts", json=gift, headers=auth("alice"))
    assert sent.status_code == 200, sent.text
    [entry] = [e for e in await journal(redis) if e.get("key") == "spoof"]
    assert (entry["user"], entry["to"], entry["coins"]) == ("alice", "streamer1", "10")
    async with await WsClient.open(world.server.url, token("alice")) as client:
        frame = {"type": "gift", "id": "ws-spoof", "stream_id": "s1", "gift_id": "rose"}
        await client.send({**frame, **SPOOFED})
        ack = await client.answer_to("ws-spoof")
        assert ack["type"] == "ack", ack
    [entry] = [e for e in await journal(redis) if e.get("key") == "ws-spoof"]
    assert entry["user"] == "alice"

    limit = {"daily_coin_limit": 7, **SPOOFED}
    assert (await http.put("/v1/wallet/limits", json=limit, headers=auth("alice"))).is_success
    bob_after = await http.get("/v1/wallet?user_id=bob", headers=auth("bob"))
    assert bob_after.json() == bob_before.json()  # bob's budget and coins untouched
    mine = await http.get("/v1/wallet?user_id=bob", headers=auth("alice"))
    assert (mine.json()["user_id"], mine.json()["daily_limit"]) == ("alice", 7)

    # streamer2 cashing out "as" streamer1: its own (empty) diamonds are what count.
    before = await money_state(redis)
    cashout = {"diamonds": 2000, "idempotency_key": "spoof-co", **SPOOFED}
    cashout["streamer_id"] = "streamer1"
    response = await http.post(
        "/v1/cashouts", json=cashout, headers=auth("streamer2", Role.STREAMER)
    )
    assert_error(response, 402, "insufficient_diamonds")
    assert await money_state(redis) == before

    assert (await http.get("/v1/wallet", headers=auth("bob"))).json() == bob_before.json()


async def test_a_viewer_cannot_touch_another_viewers_money(world: World) -> None:
    """The only wallet a token reaches is its own; a cash-out needs a streamer token."""
    http = world.http
    before = await money_state(world.redis)
    for who in ("alice", "bob"):
        wallet = await http.get("/v1/wallet", headers=auth(who))
        assert wallet.json()["user_id"] == who
        refused = await http.post(
            "/v1/cashouts",
            json={"diamonds": 2000, "idempotency_key": f"{who}-takes", "user_id": "streamer1"},
            headers=auth(who),
        )
        assert_error(refused, 403, "forbidden")
    # The same idempotency key of another user is another user's key: no replay of theirs.
    theirs = await send_gift(http, "bob", "earn")
    assert theirs.status_code == 200, theirs.text
    assert theirs.json()["coins"] == 999  # bob's own first gift, not alice's receipt
    assert (await money_state(world.redis))["journal"] == before["journal"] + 1


async def test_a_token_that_expires_on_an_open_websocket_closes_it_with_4001(
    redis_url: str, shared_client: Redis, serve: Serve
) -> None:
    """Every role's connection is closed with 4001 `token_expired` when its token
    expires, and a viewer's gift sent after the expiry is never applied."""
    server = serve(redis_url)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await go_live(http)
        await buy(http, "alice", "coins_1000")
        tokens = {
            role: issue_token(
                SECRET,
                "alice" if role is Role.VIEWER else f"{role.value}1",
                role,
                adult=True,
                stream_id="s1" if role is Role.OVERLAY else None,
                ttl_s=2,
            )
            for role in Role
        }
        expires_at = min(
            jwt.decode(raw, options={"verify_signature": False})["exp"] for raw in tokens.values()
        )

        async def until_closed(
            role: Role,
        ) -> tuple[tuple[int | None, str], dict[str, float], dict[str, float]]:
            """Keep using the connection (a viewer sends gifts, one at a time) until the
            server closes it; (close, {acked gift id: when it was sent}, {every gift id
            sent: when})."""
            sent_at: dict[str, float] = {}  # the same clock as the server's
            async with await WsClient.open(server.url, tokens[role]) as client:
                await client.subscribe("s1")
                while not client.done:
                    assert time.time() < expires_at + 3, f"{role} still open after its expiry"
                    with contextlib.suppress(Closed, ConnectionClosed):
                        if role is Role.VIEWER:
                            gift_id = f"exp-{len(sent_at)}"
                            sent_at[gift_id] = time.time()
                            await client.gift("s1", id=gift_id)
                        else:
                            await client.barrier()
                    with contextlib.suppress(TimeoutError):
                        await client.closed(timeout=0.02)
                closed = await client.closed()
                acked = {m["id"] for m in client.received if m["type"] == "ack"}
                client.assert_no_traceback()
            return closed, {gift_id: sent_at[gift_id] for gift_id in acked}, sent_at

        results = await asyncio.gather(*(until_closed(role) for role in Role))
        for role, (closed, acked, _) in zip(Role, results, strict=True):
            assert closed == (4001, "token_expired"), (role, closed)
            late = [gift_id for gift_id, at in acked.items() if at >= expires_at]
            assert not late, f"gifts sent after the expiry were applied: {late}"
        _, acked, sent_at = results[0]
        applied = {e["key"] for e in await journal(shared_client) if e["type"] == "gift"}
        # Every acked gift applied; an applied one was sent before the expiry (its ack
        # may have been lost to the close, as to any close: a retry answers it).
        assert set(acked) <= applied
        assert all(sent_at[key] < expires_at for key in applied), (applied, expires_at)
        assert (
            await http.get("/v1/wallet", headers=bearer(tokens[Role.VIEWER]))
        ).status_code == 401
