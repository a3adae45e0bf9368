"""Live battles over real HTTP and WebSocket: the whole flow, and what viewers see."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gifting_server.auth import Role
from tests.api import assert_error, snapshot
from tests.api.test_http_flow import ALICE, BOB, STREAMER, buy, gift, go_live
from tests.conftest import ServerThread, make_settings
from tests.factories import auth, token
from tests.hub.wsclient import WsClient
from tests.topology import async_client

OTHER = auth("streamer2", Role.STREAMER, name="Streamer Two")
THIRD = auth("streamer3", Role.STREAMER, name="Streamer Three")
# Short battles and a fast tick, so that a whole battle runs in a second or two.
BATTLES = {"min_duration_s": 1, "tick_ms": 100, "invite_ttl_s": 60}


@pytest.fixture
def server(redis_url: str, tmp_path: Path) -> Iterator[ServerThread]:
    settings = make_settings(redis_url, tmp_path, battles=BATTLES)
    with ServerThread(settings) as running:
        yield running


@pytest.fixture
async def live(http: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    await go_live(http, "s1")
    await go_live(http, "s2", OTHER)
    await buy(http, "alice", "coins_500")
    await buy(http, "bob", "coins_500")
    yield http


async def invite(
    http: httpx.AsyncClient, duration_s: int = 2, key: str = "inv1", who: Any = STREAMER
) -> httpx.Response:
    body = {
        "stream_id": "s1",
        "opponent_stream_id": "s2",
        "duration_s": duration_s,
        "idempotency_key": key,
    }
    return await http.post("/v1/battles", json=body, headers=who)


async def until_status(
    http: httpx.AsyncClient, battle_id: str, status: str, within_s: float = 10
) -> Any:
    """The battle's body once it reached `status`: the server's ticker moves it (ends a
    battle, expires an invite) on its own time, so this polls, bounded."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        body = (await http.get(f"/v1/battles/{battle_id}")).json()
        if body["status"] == status:
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"battle {battle_id} did not become {status} within {within_s} s")


async def until_ended(http: httpx.AsyncClient, battle_id: str, within_s: float = 10) -> Any:
    return await until_status(http, battle_id, "ended", within_s)


async def test_a_whole_battle_counts_each_sides_gifts_and_names_the_winner(
    live: httpx.AsyncClient,
) -> None:
    invited = await invite(live)
    assert invited.status_code == 201, invited.text
    battle = invited.json()
    battle_id = battle["battle_id"]
    assert battle["status"] == "invited"
    assert battle_id.endswith(".s1")
    assert [s["stream_id"] for s in battle["sides"]] == ["s1", "s2"]
    assert battle["sides"][1]["streamer"] == {"id": "streamer2", "name": "Streamer Two"}

    for stream_id in ("s1", "s2"):  # a studio finds the battle from its stream
        assert (await live.get(f"/v1/streams/{stream_id}")).json()["battle_id"] == battle_id
    accepted = await live.post(f"/v1/battles/{battle_id}/accept", headers=OTHER)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["status"] == "live"
    assert accepted.json()["ends_at"] > 0

    assert (await gift(live, ALICE, "a1", "finger_heart", 2, "s1")).status_code == 200
    assert (await gift(live, BOB, "b1", "rose", 3, "s2")).status_code == 200
    assert (await gift(live, ALICE, "a2", "rose", 1, "s1")).status_code == 200
    during = (await live.get(f"/v1/battles/{battle_id}")).json()
    assert [s["points"] for s in during["sides"]] == [11, 3]
    assert during["sides"][0]["top"] == [{"user_id": "alice", "name": "Alice", "coins": 11}]

    ended = await until_ended(live, battle_id)
    assert ended["winner"] == "s1"
    assert [s["points"] for s in ended["sides"]] == [11, 3]
    assert ended["reason"] == "time"
    # after the end, gifts count for nobody
    assert (await gift(live, BOB, "b2", "rose", 1, "s2")).status_code == 200
    assert (await live.get(f"/v1/battles/{battle_id}")).json() == ended
    # and both streams may battle again
    again = await invite(live, key="inv2")
    assert again.status_code == 201, again.text


async def test_viewers_of_both_streams_see_the_battle_and_a_late_subscriber_gets_its_state(
    live: httpx.AsyncClient, server: ServerThread
) -> None:
    async with (
        await WsClient.open(server.url, token("v1")) as one,
        await WsClient.open(server.url, token("v2")) as two,
    ):
        await one.subscribe("s1")
        await two.subscribe("s2")
        battle_id = (await invite(live)).json()["battle_id"]
        await live.post(f"/v1/battles/{battle_id}/accept", headers=OTHER)
        await gift(live, ALICE, "a1", "rose", 4, "s1")
        async with await WsClient.open(server.url, token("v3")) as late:
            state = await late.subscribe("s2")
            assert state["battle"]["battle_id"] == battle_id
            assert state["battle"]["status"] == "live"
        for viewer in (one, two):
            seen = await viewer.events_until(
                lambda e: e["kind"] == "battle" and e["status"] == "ended", timeout=10
            )
            final = seen[-1]
            assert final["winner"] == "s1"
            assert [s["points"] for s in final["sides"]] == [4, 0]


async def test_an_invite_answers_every_wrong_input_with_its_error_and_changes_nothing(
    live: httpx.AsyncClient, redis_url: str
) -> None:
    await go_live(live, "s3", THIRD)
    await go_live(live, "s1b")  # the same streamer's second stream
    redis = await async_client(redis_url)
    try:
        before = await snapshot(redis)
        for duration in (0, 601, "60", None, 1.5):
            body: dict[str, Any] = {
                "stream_id": "s1",
                "opponent_stream_id": "s2",
                "idempotency_key": "k",
            }
            if duration is not None:
                body["duration_s"] = duration
            answer = await live.post("/v1/battles", json=body, headers=STREAMER)
            assert_error(answer, 422, "invalid_request")
        self_battle = {"stream_id": "s1", "opponent_stream_id": "s1", "duration_s": 60}
        answer = await live.post(
            "/v1/battles", json={**self_battle, "idempotency_key": "k"}, headers=STREAMER
        )
        assert_error(answer, 422, "invalid_request")
        no_key = {"stream_id": "s1", "opponent_stream_id": "s2", "duration_s": 60}
        assert_error(
            await live.post("/v1/battles", json=no_key, headers=STREAMER), 422, "invalid_request"
        )
        assert_error(await invite(live, 60, who=OTHER), 403, "forbidden")  # not s1's owner
        assert_error(await invite(live, 60, who=ALICE), 403, "forbidden")  # a viewer
        assert_error(
            await live.post("/v1/battles", json={**no_key, "idempotency_key": "k"}),
            401,
            "unauthorized",
        )
        ghost = {**no_key, "opponent_stream_id": "nobody", "idempotency_key": "k"}
        assert_error(
            await live.post("/v1/battles", json=ghost, headers=STREAMER), 404, "unknown_stream"
        )
        mine = {**no_key, "opponent_stream_id": "s1b", "idempotency_key": "k"}
        assert_error(
            await live.post("/v1/battles", json=mine, headers=STREAMER), 409, "battle_conflict"
        )
        assert await snapshot(redis) == before
    finally:
        await redis.aclose()


async def test_a_stream_in_a_battle_or_not_live_cannot_start_or_accept_another(
    live: httpx.AsyncClient,
) -> None:
    await go_live(live, "s3", THIRD)
    first = (await invite(live, 60)).json()["battle_id"]
    # the inviter and the invited are both taken while the invite is pending
    assert_error(await invite(live, 60, key="again"), 409, "battle_conflict")
    body = {"stream_id": "s3", "opponent_stream_id": "s2", "duration_s": 60, "idempotency_key": "t"}
    assert_error(await live.post("/v1/battles", json=body, headers=THIRD), 409, "battle_conflict")
    body = {"stream_id": "s3", "opponent_stream_id": "s1", "duration_s": 60, "idempotency_key": "u"}
    assert_error(await live.post("/v1/battles", json=body, headers=THIRD), 409, "battle_conflict")
    # once it is live too
    assert (await live.post(f"/v1/battles/{first}/accept", headers=OTHER)).status_code == 200
    body = {"stream_id": "s3", "opponent_stream_id": "s1", "duration_s": 60, "idempotency_key": "v"}
    assert_error(await live.post("/v1/battles", json=body, headers=THIRD), 409, "battle_conflict")
    # a stream that is not live cannot be invited
    await go_live(live, "s4", auth("streamer4", Role.STREAMER))
    await live.post("/v1/streams/s4/end", headers=auth("streamer4", Role.STREAMER))
    body = {"stream_id": "s3", "opponent_stream_id": "s4", "duration_s": 60, "idempotency_key": "w"}
    assert_error(await live.post("/v1/battles", json=body, headers=THIRD), 409, "battle_conflict")


async def test_only_the_invited_streamer_answers_and_either_may_cancel_before_the_start(
    live: httpx.AsyncClient,
) -> None:
    battle_id = (await invite(live, 60)).json()["battle_id"]
    url = f"/v1/battles/{battle_id}"
    assert_error(await live.post(f"{url}/accept", headers=STREAMER), 403, "forbidden")
    assert_error(await live.post(f"{url}/decline", headers=STREAMER), 403, "forbidden")
    assert_error(await live.post(f"{url}/accept", headers=THIRD), 403, "forbidden")
    assert_error(await live.post(f"{url}/cancel", headers=THIRD), 403, "forbidden")
    assert_error(await live.post(f"{url}/accept", headers=ALICE), 403, "forbidden")
    assert_error(await live.post(f"{url}/accept"), 401, "unauthorized")
    for bad in ("bt_nothing.s1", "nope", "bt_x", "bt_%20.s1"):
        assert_error(
            await live.post(f"/v1/battles/{bad}/accept", headers=OTHER), 404, "unknown_battle"
        )
        assert_error(await live.get(f"/v1/battles/{bad}"), 404, "unknown_battle")
    declined = await live.post(f"{url}/decline", headers=OTHER)
    assert declined.status_code == 200 and declined.json()["status"] == "declined"
    again = await live.post(f"{url}/decline", headers=OTHER)  # repeated: as it stands
    assert again.json() == declined.json()
    assert_error(await live.post(f"{url}/accept", headers=OTHER), 409, "battle_conflict")
    assert_error(await live.post(f"{url}/cancel", headers=STREAMER), 409, "battle_conflict")
    # both streams are free again; the inviter cancels the next one
    second = (await invite(live, 60, key="inv2")).json()["battle_id"]
    cancelled = await live.post(f"/v1/battles/{second}/cancel", headers=STREAMER)
    assert cancelled.json()["status"] == "cancelled" and cancelled.json()["reason"] == "cancelled"
    assert (
        await live.post(f"/v1/battles/{second}/cancel", headers=OTHER)
    ).json() == cancelled.json()
    third = (await invite(live, 60, key="inv3")).json()["battle_id"]
    assert (await live.post(f"/v1/battles/{third}/accept", headers=OTHER)).status_code == 200
    assert_error(
        await live.post(f"/v1/battles/{third}/cancel", headers=OTHER), 409, "battle_conflict"
    )
    assert_error(
        await live.post(f"/v1/battles/{third}/decline", headers=OTHER), 409, "battle_conflict"
    )
    repeated = await live.post(f"/v1/battles/{third}/accept", headers=OTHER)
    assert repeated.status_code == 200 and repeated.json()["status"] == "live"


async def test_the_same_idempotency_key_answers_the_same_battle(live: httpx.AsyncClient) -> None:
    first = await invite(live, 60)
    again = await invite(live, 60)
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["battle_id"] == first.json()["battle_id"]
    assert_error(await invite(live, 61), 409, "idempotency_conflict")


async def test_an_unanswered_invite_expires_and_frees_both_streams(
    redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path, battles={**BATTLES, "invite_ttl_s": 1})
    with ServerThread(settings) as running:
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as client:
            await go_live(client, "s1")
            await go_live(client, "s2", OTHER)
            battle_id = (await invite(client, 60)).json()["battle_id"]
            body = await until_status(client, battle_id, "cancelled")
            assert body["reason"] == "expired"
            assert_error(
                await client.post(f"/v1/battles/{battle_id}/accept", headers=OTHER),
                409,
                "battle_conflict",
            )
            assert (await invite(client, 60, key="inv2")).status_code == 201


async def test_a_stream_that_ends_during_its_battle_forfeits_it(live: httpx.AsyncClient) -> None:
    battle_id = (await invite(live, 60)).json()["battle_id"]
    await live.post(f"/v1/battles/{battle_id}/accept", headers=OTHER)
    await gift(live, BOB, "b1", "finger_heart", 1, "s2")
    await gift(live, ALICE, "a1", "doughnut", 1, "s1")  # s1 leads...
    ended = await live.post("/v1/streams/s1/end", headers=STREAMER)
    assert ended.status_code == 200
    body = (await live.get(f"/v1/battles/{battle_id}")).json()
    assert body["status"] == "ended" and body["reason"] == "forfeit"
    assert body["winner"] == "s2"  # ...but ended its stream first
    assert body["sides"][1]["points"] == 5


async def test_a_stream_that_ends_with_an_invite_pending_cancels_it(
    live: httpx.AsyncClient,
) -> None:
    battle_id = (await invite(live, 60)).json()["battle_id"]
    await live.post("/v1/streams/s2/end", headers=OTHER)
    body = (await live.get(f"/v1/battles/{battle_id}")).json()
    assert (body["status"], body["reason"]) == ("cancelled", "stream_ended")
