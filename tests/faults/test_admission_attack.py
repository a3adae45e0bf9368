"""The overload bounds as a hostile or unlucky client meets them: a gift that ends in
any way gives its places back, and no earlier than Redis answered it; a client that
goes away mid-gift cannot start more than its bound while its gifts are under way.
Redis is paused (SIGSTOP) to hold gifts in flight."""

from __future__ import annotations

import httpx

from gifting_server.ledger.gift_admission import GiftAdmission
from gifting_server.ledger.store import Store
from tests.conftest import ServerThread
from tests.factories import token
from tests.faults import balances, buy, go_live, send_gift, wait_until
from tests.faults.conftest import Serve
from tests.hub.wsclient import WsClient
from tests.topology import AsyncClient, RedisUnderFault

PER_USER = 2


def admission_of(server: ServerThread) -> GiftAdmission:
    store: Store = server.server.config.app.state.store  # type: ignore[union-attr]
    return store.admission


def places_taken(admission: GiftAdmission) -> int:
    return sum(len(account.in_flight) for account in list(admission.accounts.values()))


async def test_a_gift_cut_off_by_its_websocket_closing_keeps_its_place_until_redis_answers(
    own_redis: RedisUnderFault, own_client: AsyncClient, serve: Serve
) -> None:
    """The connection's close cancels its gifts' tasks, but not their calls, which are
    in Redis's queue already: a client that closes and opens again must not get a
    fresh bound of places while its first gifts are still under way."""
    server = serve(
        own_redis.url,
        limits={"request_timeout_s": 60.0},  # the gifts in flight wait out the pause
        overload={"max_in_flight_per_user": PER_USER},
    )
    admission = admission_of(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=90) as http:
        await go_live(http, "s1")
        await buy(http, "mallory")
        own_redis.suspend()
        try:
            async with await WsClient.open(server.url, token("mallory")) as first:
                for n in range(PER_USER):
                    await first.send_gift("s1", id=f"first-{n}")
                await wait_until(
                    lambda: admission.users.get("mallory") == PER_USER, 10, "her gifts under way"
                )
            async with await WsClient.open(server.url, token("mallory")) as second:
                again = await second.gift("s1", id="second-0")
                assert (again["type"], again["code"]) == ("error", "rate_limited"), again
        finally:
            own_redis.resume()
        await wait_until(lambda: not admission.users, 30, "her gifts to end")
        assert places_taken(admission) == 0
        # They were under way indeed: Redis took both once it was back.
        coins = int((await balances(own_client, "mallory"))["mallory"]["coins"])
        assert coins == 100 - PER_USER
        assert (await send_gift(http, "mallory", "after")).status_code == 200


async def test_a_gift_that_fails_in_any_way_gives_its_places_back(
    own_redis: RedisUnderFault, serve: Serve
) -> None:
    """Timeouts, Redis gone mid-call, refusals of the rules and of the script,
    replays and conflicts: after each, nothing is counted in flight."""
    server = serve(own_redis.url, limits={"request_timeout_s": 0.5})
    admission = admission_of(server)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
        await go_live(http, "s1")
        await buy(http, "alice")

        async def settled() -> None:
            await wait_until(
                lambda: not admission.users and places_taken(admission) == 0, 10, "places back"
            )

        answers = []
        for key, body in (
            ("poor", {"gift_id": "rose"}),  # bob has no coins: the script refuses
            ("unknown", {"gift_id": "nope"}),  # refused before a place is taken
            ("count", {"gift_id": "rose", "count": 0}),
            ("message", {"gift_id": "rose", "message": "x" * 10_000}),
        ):
            response = await http.post(
                "/v1/streams/s1/gifts",
                json={**body, "idempotency_key": key},
                headers={"Authorization": f"Bearer {token('bob')}"},
            )
            answers.append(response.status_code)
            await settled()
        assert all(400 <= status < 500 for status in answers), answers
        ok = await send_gift(http, "alice", "k1")
        assert ok.status_code == 200, ok.text
        assert (await send_gift(http, "alice", "k1")).json() == ok.json()  # a replay
        conflict = await http.post(
            "/v1/streams/s1/gifts",
            json={"gift_id": "rose", "count": 2, "idempotency_key": "k1"},
            headers={"Authorization": f"Bearer {token('alice')}"},
        )
        assert conflict.status_code == 409, conflict.text
        unknown_stream = await http.post(
            "/v1/streams/nowhere/gifts",
            json={"gift_id": "rose", "idempotency_key": "k2"},
            headers={"Authorization": f"Bearer {token('alice')}"},
        )
        assert unknown_stream.status_code == 404, unknown_stream.text
        await settled()

        own_redis.suspend()  # a call that times out
        try:
            timed_out = await send_gift(http, "alice", "k3")
            assert timed_out.status_code == 503, timed_out.text
            await settled()
        finally:
            own_redis.resume()
        own_redis.kill()  # a call whose connection is lost
        try:
            lost = await send_gift(http, "alice", "k4")
            assert lost.status_code == 503, lost.text
            await settled()
        finally:
            own_redis.restart()

        async def taken() -> bool:
            return (await send_gift(http, "alice", "k5")).status_code == 200

        await wait_until(taken, 30, "a gift once Redis is back")
        await settled()
