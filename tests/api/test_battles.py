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
from tests.api import assert_error
from tests.api.test_http_flow import ALICE, BOB, STREAMER, buy, gift, go_live
from tests.conftest import ServerThread, make_settings
from tests.factories import auth, token
from tests.hub.wsclient import WsClient

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


async def until_ended(http: httpx.AsyncClient, battle_id: str, within_s: float = 10) -> Any:
    """The battle's body once it ended (the server's ticker ends it: polled, bounded)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        body = (await http.get(f"/v1/battles/{battle_id}")).json()
        if body["status"] == "ended":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"battle {battle_id} did not end within {within_s} s")


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
