"""Battles attacked from outside over real HTTP and WebSocket: hostile ids and bodies,
tokens of the wrong kind or of another streamer, answers racing each other, what a
viewer who arrives late is shown, a test alert during a battle."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gifting_server.auth import Role
from gifting_server.ledger import keys
from tests.api import assert_error, snapshot
from tests.api.test_battles import BATTLES, OTHER, THIRD, invite, until_ended
from tests.api.test_http_flow import ALICE, STREAMER, buy, gift, go_live
from tests.conftest import ServerThread, make_settings
from tests.factories import auth, token
from tests.faults import assert_reconciled
from tests.hub.wsclient import WsClient
from tests.topology import async_client

OVERLAY = auth("streamer1", Role.OVERLAY, stream_id="s1")


@pytest.fixture
def server(redis_url: str, tmp_path: Path) -> Iterator[ServerThread]:
    with ServerThread(make_settings(redis_url, tmp_path, battles=BATTLES)) as running:
        yield running


@pytest.fixture
async def live(http: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    await go_live(http, "s1")
    await go_live(http, "s2", OTHER)
    await buy(http, "alice", "coins_500")
    await buy(http, "bob", "coins_500")
    yield http


def body_of(stream_id: str, opponent: str, key: str, duration_s: Any = 60) -> dict[str, Any]:
    return {
        "stream_id": stream_id,
        "opponent_stream_id": opponent,
        "duration_s": duration_s,
        "idempotency_key": key,
    }


async def test_another_streamer_replaying_an_invites_key_is_forbidden(
    live: httpx.AsyncClient,
) -> None:
    first = await invite(live, 60, key="mine")
    assert first.status_code == 201
    # the same stream, body and key, with another streamer's token
    assert_error(await invite(live, 60, key="mine", who=THIRD), 403, "forbidden")
    assert_error(await invite(live, 60, key="mine", who=OTHER), 403, "forbidden")
    assert_error(await invite(live, 60, key="mine", who=ALICE), 403, "forbidden")


async def test_a_refused_invite_shows_nothing_on_either_stream(
    live: httpx.AsyncClient, server: ServerThread, redis_url: str
) -> None:
    await go_live(live, "s3", THIRD)
    pending = await live.post("/v1/battles", json=body_of("s3", "s2", "k3"), headers=THIRD)
    assert pending.status_code == 201, pending.text
    pending_id = pending.json()["battle_id"]
    redis = await async_client(redis_url, decode_responses=True)
    try:
        before = {s: await redis.xlen(keys.stream_history(s)) for s in ("s1", "s2")}
        assert_error(await invite(live, 60), 409, "battle_conflict")  # s2 is taken
        after = {s: await redis.xlen(keys.stream_history(s)) for s in ("s1", "s2")}
        assert after == before  # no `battle` event for an invite nobody was shown
    finally:
        await redis.aclose()
    async with await WsClient.open(server.url, token("v1")) as late:
        state = await late.subscribe("s2")  # s2's studio still sees its pending invite
        assert state["battle"]["battle_id"] == pending_id
        assert state["battle"]["status"] == "invited"
    accepted = await live.post(f"/v1/battles/{pending_id}/accept", headers=OTHER)
    assert accepted.status_code == 200 and accepted.json()["status"] == "live"


@pytest.mark.parametrize(
    "bad",
    [
        "bt_nothing.s1.s2",
        "bt_.s1",
        "bt_x.",
        "bt_x..s1",
        "bt_x.s1:meta",
        "bt_" + "a" * 200 + ".s1",
        "cash_0123456789abcdef",
        "BT_x.s1",
        "bt_x.%7Bs:s1%7D",
        "bt_x.s1%00",
        "bt_x.s\u00e9",
    ],
)
async def test_ids_that_are_not_a_battles_are_unknown_everywhere(
    live: httpx.AsyncClient, bad: str
) -> None:
    await invite(live, 60)  # a real battle exists meanwhile
    assert_error(await live.get(f"/v1/battles/{bad}"), 404, "unknown_battle")
    for action in ("accept", "decline", "cancel"):
        answer = await live.post(f"/v1/battles/{bad}/{action}", headers=OTHER)
        assert_error(answer, 404, "unknown_battle")


async def test_hostile_invite_bodies_are_refused_and_change_nothing(
    live: httpx.AsyncClient, redis_url: str
) -> None:
    redis = await async_client(redis_url)
    try:
        before = await snapshot(redis)
        for duration in (True, 1e2, 60.0, "60", [60], {"s": 60}, -60, 2**70, 10**400):
            answer = await live.post(
                "/v1/battles", json=body_of("s1", "s2", "k", duration), headers=STREAMER
            )
            assert_error(answer, 422, "invalid_request")
        for field, value in (
            ("stream_id", "s1.s2"),
            ("stream_id", "s" * 65),
            ("opponent_stream_id", "s2.x"),
            ("opponent_stream_id", None),
            ("opponent_stream_id", 2),
            ("idempotency_key", "k" * 129),
            ("idempotency_key", "k\n"),
            ("winner", "s1"),
        ):
            hostile = {**body_of("s1", "s2", "k"), field: value}
            answer = await live.post("/v1/battles", json=hostile, headers=STREAMER)
            assert_error(answer, 422, "invalid_request")
        huge = (
            '{"stream_id":"s1","opponent_stream_id":"s2","duration_s":60,"x":"'
            + "a" * (4 << 20)
            + '"}'
        )
        answer = await live.post(
            "/v1/battles", content=huge, headers={**STREAMER, "content-type": "application/json"}
        )
        assert answer.status_code in (413, 422), answer.text
        for raw in ("[]", "null", "{", '{"a":1}{', "\xff"):
            answer = await live.post(
                "/v1/battles", content=raw, headers={**STREAMER, "content-type": "application/json"}
            )
            assert_error(answer, 422, "invalid_request")
        assert_error(await invite(live, 60, who=OVERLAY), 403, "forbidden")
        assert await snapshot(redis) == before
    finally:
        await redis.aclose()


async def test_the_bounds_of_a_duration_are_taken_and_one_past_them_refused(
    redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path, battles={"tick_ms": 100})
    with ServerThread(settings) as running:
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:
            await go_live(http, "s1")
            await go_live(http, "s2", OTHER)
            for duration in (59, 601):
                answer = await invite(http, duration, key=f"k{duration}")
                assert_error(answer, 422, "invalid_request")
            for duration in (60, 600):
                answer = await invite(http, duration, key=f"k{duration}")
                assert answer.status_code == 201, answer.text
                assert answer.json()["duration_s"] == duration
                battle_id = answer.json()["battle_id"]
                cancelled = await http.post(f"/v1/battles/{battle_id}/cancel", headers=OTHER)
                assert cancelled.json()["status"] == "cancelled"


async def test_viewer_and_overlay_tokens_cannot_answer_and_another_streamers_battle_is_not_theirs(
    live: httpx.AsyncClient,
) -> None:
    await go_live(live, "s3", THIRD)
    battle_id = (await invite(live, 60)).json()["battle_id"]
    url = f"/v1/battles/{battle_id}"
    for who in (ALICE, OVERLAY, auth("streamer2", Role.OVERLAY, stream_id="s2"), THIRD):
        for action in ("accept", "decline", "cancel"):
            assert_error(await live.post(f"{url}/{action}", headers=who), 403, "forbidden")
    assert (await live.get(url, headers=OVERLAY)).json()["status"] == "invited"
    assert (await live.get(url)).json()["status"] == "invited"


async def test_answers_racing_each_other_leave_one_outcome_and_both_streams_free(
    live: httpx.AsyncClient,
) -> None:
    actions = [("accept", OTHER), ("decline", OTHER), ("cancel", STREAMER), ("cancel", OTHER)]
    for round_ in range(8):
        battle_id = (await invite(live, 60, key=f"r{round_}")).json()["battle_id"]
        url = f"/v1/battles/{battle_id}"
        order = actions[round_ % 4 :] + actions[: round_ % 4]
        answers = await asyncio.gather(
            *(live.post(f"{url}/{action}", headers=who) for action, who in order)
        )
        final = (await live.get(url)).json()
        ok = [a for a in answers if a.status_code == 200]
        assert ok and all(a.json()["status"] == final["status"] for a in ok), final
        for answer in answers:
            if answer.status_code != 200:
                assert_error(answer, 409, "battle_conflict")
        if final["status"] == "live":
            assert (await live.post("/v1/streams/s2/end", headers=OTHER)).status_code == 200
            assert (await live.get(url)).json()["reason"] == "forfeit"
            await go_live(live, "s2", OTHER)
        for stream_id in ("s1", "s2"):
            status = (await live.get(f"/v1/streams/{stream_id}")).json()
            assert status["battle_id"] is None, (final, status)


async def test_a_late_viewer_sees_the_new_battle_not_the_last_one_and_a_test_alert_counts_nothing(
    live: httpx.AsyncClient, server: ServerThread
) -> None:
    first = (await invite(live, 1, key="one")).json()["battle_id"]
    await live.post(f"/v1/battles/{first}/accept", headers=OTHER)
    await gift(live, ALICE, "a1", "rose", 2, "s1")
    await until_ended(live, first)
    async with await WsClient.open(server.url, token("v1")) as late:
        shown = (await late.subscribe("s2"))["battle"]
        assert (shown["battle_id"], shown["status"]) == (first, "ended")
    second = (await invite(live, 60, key="two")).json()["battle_id"]
    await live.post(f"/v1/battles/{second}/accept", headers=OTHER)
    test_alert = await live.post(
        "/v1/streams/s2/alerts",
        json={"action": "test", "gift_id": "rose", "count": 5},
        headers=OTHER,
    )
    assert test_alert.status_code == 200, test_alert.text
    async with await WsClient.open(server.url, token("v2")) as late:
        shown = (await late.subscribe("s2"))["battle"]
        assert (shown["battle_id"], shown["status"]) == (second, "live")
        assert [s["points"] for s in shown["sides"]] == [0, 0]
    assert [s["points"] for s in (await live.get(f"/v1/battles/{second}")).json()["sides"]] == [
        0,
        0,
    ]


@pytest.mark.slow
async def test_every_answer_and_a_stream_ending_and_coming_back_at_the_expiry_end_each_battle_once(
    redis_url: str, tmp_path: Path
) -> None:
    quick = {**BATTLES, "invite_ttl_s": 1}
    settings = make_settings(redis_url, tmp_path, battles=quick)
    redis = await async_client(redis_url, decode_responses=True)
    with ServerThread(settings) as running:
        async with httpx.AsyncClient(base_url=running.url, timeout=10) as http:
            await go_live(http, "s1")
            await go_live(http, "s2", OTHER)
            await buy(http, "alice", "coins_500")
            battle_ids = []
            for round_ in range(6):
                invited = await invite(http, 1, key=f"r{round_}")
                assert invited.status_code == 201, invited.text
                battle_id = invited.json()["battle_id"]
                battle_ids.append(battle_id)
                url = f"/v1/battles/{battle_id}"
                # at the invite's expiry (a little before or after it, by round)
                wait_ms = invited.json()["expires_at"] - time.time() * 1000 + (round_ - 3) * 15
                await asyncio.sleep(max(wait_ms, 0) / 1000)
                ending = ("s1", STREAMER) if round_ % 2 else ("s2", OTHER)

                async def end_and_come_back(stream_id: str, who: dict[str, str]) -> None:
                    await http.post(f"/v1/streams/{stream_id}/end", headers=who)
                    await go_live(http, stream_id, who)

                answers = await asyncio.gather(
                    http.post(f"{url}/accept", headers=OTHER),
                    gift(http, ALICE, f"g{round_}", "rose", 1, "s1"),
                    http.post(f"{url}/{'decline' if round_ % 3 else 'cancel'}", headers=OTHER),
                    end_and_come_back(*ending),
                )
                for answer in (answers[0], answers[2]):
                    assert answer.status_code in (200, 409), answer.text
                final = await until_final(http, battle_id)
                if final["status"] == "ended":
                    assert final["reason"] in ("forfeit", "time"), final
                for stream_id in ("s1", "s2"):
                    status = (await http.get(f"/v1/streams/{stream_id}")).json()
                    assert status["battle_id"] is None, (final, status)
            for stream_id in ("s1", "s2"):  # each battle's end shown once on each stream
                rows = await redis.xrange(keys.stream_history(stream_id))
                events = [orjson.loads(fields["e"]) for _, fields in rows]
                for battle_id in battle_ids:
                    finals = [
                        e
                        for e in events
                        if e["kind"] == "battle"
                        and e["battle_id"] == battle_id
                        and e["status"] in ("ended", "declined", "cancelled")
                    ]
                    assert len(finals) == 1, (stream_id, battle_id, finals)
            assert not await redis.exists(keys.BATTLES_DUE)
            await assert_reconciled(redis)
    await redis.aclose()


async def until_final(http: httpx.AsyncClient, battle_id: str) -> Any:
    """The battle once it is closed and both streams let go of it (polled, bounded)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        body = (await http.get(f"/v1/battles/{battle_id}")).json()
        if body["status"] in ("ended", "declined", "cancelled"):
            streams = [(await http.get(f"/v1/streams/{s}")).json() for s in ("s1", "s2")]
            if all(s["battle_id"] != battle_id for s in streams):
                return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"battle {battle_id} was not closed for good: {body}")


async def test_a_duration_out_of_range_is_refused_naming_the_configured_bounds(
    live: httpx.AsyncClient,
) -> None:
    low, high = BATTLES["min_duration_s"], 600
    for duration in (0, -1, high + 1, 86_401):
        answer = await invite(live, duration)
        assert_error(answer, 422, "invalid_request")
        message = answer.json()["error"]["message"]
        assert f"between {low} and {high}" in message, message


async def test_one_invite_sent_four_times_at_once_makes_one_battle(
    live: httpx.AsyncClient,
) -> None:
    answers = await asyncio.gather(*(invite(live, 60, key="same") for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [200, 200, 200, 201], [a.text for a in answers]
    ids = {a.json()["battle_id"] for a in answers}
    assert len(ids) == 1
    for stream_id in ("s1", "s2"):
        assert (await live.get(f"/v1/streams/{stream_id}")).json()["battle_id"] in ids
    other_body = await invite(live, 61, key="same")
    assert_error(other_body, 409, "idempotency_conflict")
