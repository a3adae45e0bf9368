"""One viewer cannot starve the others ([overload] max_in_flight_per_user,
ledger/gift_admission.py). Redis is paused (SIGSTOP) so that every gift the worker
takes stays in flight: a viewer with no coins floods concurrent HTTP gifts, each
with its own key; only `max_in_flight_per_user` of them take a place, the rest are
refused `rate_limited` at once (429 with Retry-After; over the WebSocket, an error
with `retry_after_ms`), while Redis is still paused.
Another viewer's gift then still gets the place left (the worker's next gift is
refused `in_flight`: every place is taken, by the flood's few and that gift). Once
Redis is back that gift is acknowledged, and the flood's refused keys, sent again
once the viewer has coins, go through, each charged once."""

from __future__ import annotations

import asyncio

import httpx

from gifting_server.config import load_settings
from tests.factories import token
from tests.faults import balances, buy, go_live, send_gift
from tests.faults.conftest import Serve
from tests.faults.test_overload import refused_count
from tests.hub.wsclient import WsClient
from tests.topology import AsyncClient, RedisUnderFault

PER_USER = 4
FLOOD = 30
ROSE = next(g.coins for g in load_settings({}).gifts if g.id == "rose")


async def answered(requests: list[asyncio.Task[httpx.Response]], count: int) -> None:
    """Until `count` of `requests` have their answer."""
    try:
        async with asyncio.timeout(10):
            while sum(r.done() for r in requests) < count:
                pending = [r for r in requests if not r.done()]
                await asyncio.wait(pending, return_when="FIRST_COMPLETED")
    except TimeoutError:
        done = sum(r.done() for r in requests)
        raise AssertionError(f"{done} of {len(requests)} answered, not {count}") from None


async def test_one_viewer_flooding_gifts_leaves_places_for_the_others(
    own_redis: RedisUnderFault, own_client: AsyncClient, serve: Serve
) -> None:
    server = serve(
        own_redis.url,
        limits={"request_timeout_s": 60.0},  # the gifts in flight wait out the pause
        overload={"max_in_flight": PER_USER + 1, "max_in_flight_per_user": PER_USER},
    )
    async with (
        httpx.AsyncClient(base_url=server.url, timeout=90) as http,
        await WsClient.open(server.url, token("bob")) as bob,
        await WsClient.open(server.url, token("mallory")) as mallory,
    ):
        await go_live(http, "s1")
        await buy(http, "bob")
        counted = await refused_count(http, "user_in_flight")

        own_redis.suspend()
        try:
            flood = {
                f"flood-{n}": asyncio.ensure_future(send_gift(http, "mallory", f"flood-{n}"))
                for n in range(FLOOD)
            }
            await answered(list(flood.values()), FLOOD - PER_USER)
            refused = [key for key, request in flood.items() if request.done()]
            for key in refused:
                response = flood[key].result()
                assert response.status_code == 429, response.text
                error = response.json()["error"]
                assert error["code"] == "rate_limited"
                assert int(response.headers["retry-after"]) == 1  # 250 ms, rounded up
                assert error["retry_after_ms"] == load_settings({}).overload.retry_after_min_ms
            assert await refused_count(http, "user_in_flight") == counted + len(refused)
            # Her gifts over the WebSocket meet the same bound, across edges.
            over_ws = await mallory.gift("s1", id="flood-ws")
            assert (over_ws["type"], over_ws["code"]) == ("error", "rate_limited"), over_ws
            assert over_ws["retry_after_ms"] == load_settings({}).overload.retry_after_min_ms
            # Bob's gift takes the place the flood left; the next one finds none.
            taken = await bob.send_gift("s1", id="bob-1")
            await bob.send_gift("s1", id="bob-2")
            no_place = await bob.answer_to("bob-2")
            assert no_place["code"] == "service_unavailable", no_place
            assert no_place["retry_after_ms"] > 0
        finally:
            own_redis.resume()

        assert (await bob.answer_to(taken, timeout=30))["type"] == "ack"
        held = [request for key, request in flood.items() if key not in refused]
        for response in await asyncio.gather(*held):
            assert response.status_code == 402, response.text  # no coins: the script says so
        # The refused gifts wrote nothing: with coins now, each key goes through once.
        await buy(http, "mallory")
        for key in refused:
            response = await send_gift(http, "mallory", key)
            assert response.status_code == 200, response.text
            again = await send_gift(http, "mallory", key)
            assert again.json() == response.json()
        assert (await mallory.gift("s1", id="flood-ws"))["type"] == "ack"
        coins = 100 - ROSE * (len(refused) + 1)
        assert int((await balances(own_client, "mallory"))["mallory"]["coins"]) == coins
