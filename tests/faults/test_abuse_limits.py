"""Limits hold under concurrency: a user's gift rate across HTTP and several
WebSocket connections, one connection's message rate, the user's own daily budget,
the age rule, and cash-outs racing for the same diamonds. Every refusal changes
nothing, so the ledger holds exactly what was accepted."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from websockets.frames import Opcode

from gifting_server.auth import Role
from tests.factories import auth, token
from tests.faults import assert_reconciled, buy, go_live, journal, money_state, send_gift
from tests.faults.conftest import Serve
from tests.hub.wsclient import Message, RawClient, WsClient

Outcome = tuple[str, int | None]  # ("ok", event id) or (error code, None)


def http_outcome(response: httpx.Response) -> Outcome:
    if response.status_code == 200:
        return "ok", response.json()["event_id"]
    return response.json()["error"]["code"], None


def ws_outcome(answer: Message) -> Outcome:
    return ("ok", answer["event_id"]) if answer["type"] == "ack" else (answer["code"], None)


async def ws_gifts(client: WsClient, prefix: str, n: int, gift_id: str = "rose") -> list[Outcome]:
    """`n` gifts written back to back on one connection, then their answers."""
    ids = [await client.send_gift("s1", gift_id, id=f"{prefix}-{i}") for i in range(n)]
    return [ws_outcome(await client.answer_to(i, timeout=10)) for i in ids]


# The script's own checks raced by one user's gifts all at once: the worker's bound on
# one user's gifts under way ([overload] max_in_flight_per_user) would refuse most of
# them before they reach it.
ONE_USER_RACES = {"max_in_flight_per_user": 1000}


async def flood(
    server_url: str, http: httpx.AsyncClient, user: str, n_http: int, n_ws: int, **claims: Any
) -> list[Outcome]:
    """One user sends `n_http` gifts over HTTP and `n_ws` over each of three WebSocket
    connections, all at once."""
    clients = [await WsClient.open(server_url, token(user, **claims)) for _ in range(3)]
    try:
        over_http = [send_gift(http, user, f"{user}-http-{i}", **claims) for i in range(n_http)]
        results = await asyncio.gather(
            asyncio.gather(*over_http),
            *(ws_gifts(c, f"{user}-ws{k}", n_ws) for k, c in enumerate(clients)),
        )
    finally:
        for client in clients:
            client.assert_no_traceback()
            await client.close()
    return [http_outcome(r) for r in results[0]] + [o for part in results[1:] for o in part]


def tally(outcomes: list[Outcome]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for code, _ in outcomes:
        counts[code] = counts.get(code, 0) + 1
    return counts


async def gifts_in_journal(redis: Redis, user: str) -> int:
    return sum(1 for e in await journal(redis) if e["type"] == "gift" and e["user"] == user)


async def test_one_users_gift_flood_over_http_and_websockets_meets_the_user_rate(
    redis_url: str, shared_client: Redis, serve: Serve
) -> None:
    burst, rate = 10, 1
    server = serve(redis_url, limits={"gift_burst": burst, "gift_rate_per_s": rate})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await go_live(http)
        await buy(http, "alice", "coins_1000")
        started = time.monotonic()
        outcomes = await flood(server.url, http, "alice", n_http=40, n_ws=20)
        elapsed = time.monotonic() - started

    counts = tally(outcomes)
    assert set(counts) == {"ok", "rate_limited"}, counts
    assert burst <= counts["ok"] <= burst + math.ceil(elapsed * rate), (counts, elapsed)
    assert await gifts_in_journal(shared_client, "alice") == counts["ok"]
    wallet = await shared_client.hget("{u:alice}:wallet", "coins")
    assert int(wallet or 0) == 1000 - counts["ok"]
    await assert_reconciled(shared_client)


async def test_one_connections_flood_is_rate_limited_then_closed(
    redis_url: str, shared_client: Redis, serve: Serve
) -> None:
    server = serve(redis_url, websocket={"rate_per_s": 1, "burst": 5, "abuse_close_after": 5})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await go_live(http)
        await buy(http, "alice")
        async with await WsClient.open(server.url, token("alice")) as flooder:
            started = time.monotonic()
            for i in range(50):
                await flooder.send(
                    {"type": "gift", "id": f"flood-{i}", "stream_id": "s1", "gift_id": "rose"}
                )
            assert (await flooder.closed())[0] == 4008
            bucket = 5 + math.ceil(time.monotonic() - started)  # the burst, and refills at 1/s
            flooder.assert_no_traceback()
        acks = [m for m in flooder.received if m["type"] == "ack"]
        errors = [m for m in flooder.received if m["type"] == "error"]
        assert {e["code"] for e in errors} == {"rate_limited"}
        assert len(acks) + len(errors) < 50  # closed before answering everything
        # Only messages within the bucket reached the ledger: each acknowledged one, and
        # perhaps one still in flight when the server closed (its retry would answer it).
        journaled = {e["key"] for e in await journal(shared_client) if e["type"] == "gift"}
        assert {a["id"] for a in acks} <= journaled
        assert len(journaled) <= bucket
        assert not journaled & {e["id"] for e in errors}  # a refused message changed nothing
        # Another connection of the same user has its own bucket.
        async with await WsClient.open(server.url, token("alice")) as calm:
            assert (await calm.gift("s1", id="calm"))["type"] == "ack"
    await assert_reconciled(shared_client)


PING_FLOOD = 20_000  # pings of 125 bytes: 2.6 MB, all sent before reading anything


def drops(reason: str) -> float:
    """Connections this process's server dropped for `reason` (the server runs in a
    thread of the test process, so its registry is ours)."""
    return REGISTRY.get_sample_value("gifting_ws_drops_total", {"reason": reason}) or 0.0


async def wait_for_drop(reason: str, above: float, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while drops(reason) <= above:
        assert time.monotonic() < deadline, f"the server dropped no connection as {reason}"
        await asyncio.sleep(0.01)


async def test_a_ping_flood_from_a_peer_that_never_reads_is_cut_off(
    redis_url: str, serve: Serve, subtests: pytest.Subtests
) -> None:
    """Pongs go through the connection's bounded outbox (else: 4009) and take a rate
    token like any message (else: rate_limited, then 4008): what the server holds for
    a peer that does not read stays bounded whatever it sends."""
    cases = {
        "within the rate": ({}, 4009),
        "over the rate": ({"rate_per_s": 1, "burst": 5, "abuse_close_after": 5}, 4008),
    }
    for case, (limits, code) in cases.items():
        with subtests.test(case):
            server = serve(redis_url, websocket=limits)
            flooder = await RawClient(server.port, token("flooder")).open()
            reason = "slow" if code == 4009 else "rate_limited"
            dropped = drops(reason)
            try:
                await flooder.send_frames(*[(Opcode.PING, b"p" * 125, True)] * PING_FLOOD)
                # Read nothing until the server cut the peer off: a client that reads
                # would drain the pongs and never back up into the server.
                await wait_for_drop(reason, above=dropped)
                close = await flooder.read_until_close()
            finally:
                flooder.shutdown()
            assert close.code == code
            # kernel buffers, the transport's buffer and the outbox: well under 1 MiB
            assert flooder.bytes_read < 1 << 20, flooder.bytes_read
            errors = [m for m in flooder.messages if m["type"] == "error"]
            assert {e["code"] for e in errors} <= {"rate_limited"}
            if code == 4008:
                assert len(errors) == 5 - 1  # the fifth refusal in a row closes


async def test_100_concurrent_gifts_against_a_budget_for_10_let_exactly_10_through(
    redis_url: str, shared_client: Redis, serve: Serve
) -> None:
    server = serve(redis_url, overload=ONE_USER_RACES)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await go_live(http)
        await buy(http, "alice", "coins_1000")
        limit = await http.put(
            "/v1/wallet/limits", json={"daily_coin_limit": 10}, headers=auth("alice")
        )
        assert limit.status_code == 200, limit.text
        outcomes = await flood(server.url, http, "alice", n_http=40, n_ws=20)

    counts = tally(outcomes)
    assert counts == {"ok": 10, "daily_limit_exceeded": 90}, counts
    event_ids = [event_id for code, event_id in outcomes if code == "ok"]
    assert len(set(event_ids)) == 10
    wallet = await shared_client.hgetall("{u:alice}:wallet")
    assert (wallet["coins"], wallet["spent"]) == ("990", "10")
    assert await gifts_in_journal(shared_client, "alice") == 10
    await assert_reconciled(shared_client)


async def test_an_unverified_viewer_cannot_gift_however_many_try_at_once(
    redis_url: str, shared_client: Redis, serve: Serve
) -> None:
    server = serve(redis_url, overload=ONE_USER_RACES)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await go_live(http)
        await buy(http, "kid", "coins_1000")
        before = await money_state(shared_client)
        outcomes = await flood(server.url, http, "kid", n_http=40, n_ws=20, adult=False)
        assert tally(outcomes) == {"age_verification_required": 100}
        assert await money_state(shared_client) == before


async def test_parallel_cashouts_of_the_same_diamonds_let_exactly_one_through(
    redis_url: str, shared_client: Redis, serve: Serve
) -> None:
    server = serve(redis_url, economy={"holding_period_days": 0})
    streamer = auth("streamer1", Role.STREAMER)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await go_live(http)
        await buy(http, "alice", "coins_5000")
        earned = await send_gift(http, "alice", "earn", "hand_hearts", 40)  # 2000 diamonds
        assert earned.status_code == 200, earned.text
        responses = await asyncio.gather(
            *(
                http.post(
                    "/v1/cashouts",
                    json={"diamonds": 2000, "idempotency_key": f"co-{i}"},
                    headers=streamer,
                )
                for i in range(20)
            )
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201] + [402] * 19, statuses
    refused = {r.json()["error"]["code"] for r in responses if r.status_code == 402}
    assert refused == {"insufficient_diamonds"}
    assert await shared_client.hget("{u:streamer1}:wallet", "diamonds") == "0"
    assert await shared_client.hlen("{u:streamer1}:cashouts") == 1
    await assert_reconciled(shared_client)
