"""The streamer's endpoints over real HTTP and WebSocket: alert control, the goal,
message settings, gift messages on both paths, and what subscribers are told."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from gifting_server.auth import Role
from gifting_server.ledger import keys
from tests.api import assert_error
from tests.api.test_http_flow import ALICE, STREAMER, buy, gift, go_live
from tests.conftest import ServerThread
from tests.factories import auth, token
from tests.hub.wsclient import WsClient
from tests.topology import async_client

OTHER_STREAMER = auth("streamer2", Role.STREAMER)
OVERLAY = auth("streamer1", Role.OVERLAY, stream_id="s1")
OVERLAY_TOKEN = token("streamer1", Role.OVERLAY, stream_id="s1")


@pytest.fixture
async def live(http: httpx.AsyncClient) -> httpx.AsyncClient:
    await go_live(http, "s1")
    await buy(http, "alice", "coins_500")
    return http


async def alert(http: httpx.AsyncClient, body: dict[str, Any], who: Any = STREAMER) -> Any:
    return await http.post("/v1/streams/s1/alerts", json=body, headers=who)


async def test_every_alert_action_reaches_an_open_overlay(
    live: httpx.AsyncClient, server: ServerThread
) -> None:
    async with await WsClient.open(server.url, OVERLAY_TOKEN) as overlay:
        first = await overlay.subscribe("s1")
        assert (first["alerts_paused"], first["goal"]) == (False, None)
        sent = await gift(live, ALICE, "k1")
        gift_id = sent.json()["event_id"]
        answers = []
        for body in (
            {"action": "pause"},
            {"action": "skip"},
            {"action": "clear"},
            {"action": "replay", "event_id": gift_id},
            {"action": "test", "gift_id": "rose"},
            {"action": "resume"},
        ):
            response = await alert(live, body)
            assert response.status_code == 200, response.text
            answers.append(response.json())
        assert [a["action"] for a in answers] == [
            "pause",
            "skip",
            "clear",
            "replay",
            "test",
            "resume",
        ]
        last = answers[-1]["event_id"]
        seen = [
            e
            for e in await overlay.events_until(lambda e: e["event_id"] == last)
            if e["kind"] in ("alerts", "gift") and e["event_id"] != gift_id
        ]
        kinds = [(e["kind"], e.get("action"), e.get("paused")) for e in seen]
        assert kinds == [
            ("alerts", "pause", True),
            ("alerts", "skip", True),
            ("alerts", "clear", True),
            ("alerts", "replay", True),
            ("gift", None, None),
            ("alerts", "resume", False),
        ]
        assert seen[3]["event"]["event_id"] == gift_id
        assert seen[4]["test"] is True


async def test_the_paused_state_is_told_on_subscribe_and_by_the_stream(
    live: httpx.AsyncClient, server: ServerThread
) -> None:
    assert (await alert(live, {"action": "pause"})).status_code == 200
    async with await WsClient.open(server.url, OVERLAY_TOKEN) as overlay:
        assert (await overlay.subscribe("s1"))["alerts_paused"] is True
    assert (await live.get("/v1/streams/s1")).json()["alerts_paused"] is True
    assert (await alert(live, {"action": "resume"})).status_code == 200
    async with await WsClient.open(server.url, OVERLAY_TOKEN) as overlay:
        assert (await overlay.subscribe("s1"))["alerts_paused"] is False


async def test_alert_control_refuses_everyone_but_the_streamer(live: httpx.AsyncClient) -> None:
    for who in (OTHER_STREAMER, ALICE, OVERLAY):
        assert_error(await alert(live, {"action": "pause"}, who), 403, "forbidden")
    assert_error(await alert(live, {"action": "pause"}, {}), 401, "unauthorized")
    response = await live.post(
        "/v1/streams/nope/alerts", json={"action": "pause"}, headers=STREAMER
    )
    assert_error(response, 404, "unknown_stream")
    assert (await live.get("/v1/streams/s1")).json()["alerts_paused"] is False


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"action": "dance"},
        {"action": 1},
        {"action": "replay"},
        {"action": "replay", "event_id": "1"},
        {"action": "replay", "event_id": 0},
        {"action": "test"},
        {"action": "test", "gift_id": "rose", "count": 0},
        {"action": "pause", "extra": True},
        # a field of another action: the body does not say what it means
        {"action": "pause", "event_id": 1},
        {"action": "resume", "gift_id": "rose"},
        {"action": "skip", "count": 2},
        {"action": "clear", "event_id": 1},
        {"action": "replay", "event_id": 1, "gift_id": "rose"},
        {"action": "test", "gift_id": "rose", "event_id": 1},
    ],
)
async def test_bad_alert_bodies_are_refused(live: httpx.AsyncClient, body: dict[str, Any]) -> None:
    before = (await live.get("/v1/streams/s1")).json()
    assert_error(await alert(live, body), 422, "invalid_request")
    assert (await live.get("/v1/streams/s1")).json() == before  # nothing changed


async def test_replay_and_test_refusals(live: httpx.AsyncClient) -> None:
    paused = (await alert(live, {"action": "pause"})).json()["event_id"]
    assert_error(await alert(live, {"action": "replay", "event_id": paused}), 404, "unknown_event")
    assert_error(await alert(live, {"action": "replay", "event_id": 999}), 404, "unknown_event")
    response = await alert(live, {"action": "test", "gift_id": "no_such"})
    assert_error(response, 404, "unknown_gift")


async def test_a_test_alert_leaves_wallets_and_boards_as_they_were(
    live: httpx.AsyncClient,
) -> None:
    assert (await gift(live, ALICE, "k1", "rose", 2)).status_code == 200
    before = [(await live.get("/v1/wallet", headers=who)).json() for who in (ALICE, STREAMER)]
    boards = [
        (await live.get(f"/v1/streams/s1/leaderboard?period={p}")).json()
        for p in ("stream", "day", "all")
    ]
    response = await alert(live, {"action": "test", "gift_id": "universe", "count": 3})
    assert response.status_code == 200, response.text
    after = [(await live.get("/v1/wallet", headers=who)).json() for who in (ALICE, STREAMER)]
    assert after == before
    assert boards == [
        (await live.get(f"/v1/streams/s1/leaderboard?period={p}")).json()
        for p in ("stream", "day", "all")
    ]
    assert (await live.get("/v1/streams/s1")).json()["coins_total"] == 2


async def put_goal(http: httpx.AsyncClient, body: Any, who: Any = STREAMER) -> httpx.Response:
    return await http.put("/v1/streams/s1/goal", json=body, headers=who)


async def test_the_goal_is_held_by_the_server_and_told_to_subscribers(
    live: httpx.AsyncClient, server: ServerThread
) -> None:
    await gift(live, ALICE, "k0", "rose", 4)  # before the goal: not counted
    response = await put_goal(live, {"target": 100, "title": "New mic"})
    assert response.status_code == 200, response.text
    assert response.json() == {"target": 100, "progress": 0, "title": "New mic", "counted_from": 4}
    async with await WsClient.open(server.url, OVERLAY_TOKEN) as overlay:
        await gift(live, ALICE, "k1", "hand_hearts")
        await gift(live, ALICE, "k2", "rose", 3)
        subscribed = await overlay.subscribe("s1")
        assert subscribed["goal"] == {
            "target": 100,
            "title": "New mic",
            "counted_from": 4,
            "progress": 103,
        }
        reset = await put_goal(live, {"target": 200, "title": "Bigger mic", "reset": True})
        assert reset.json()["progress"] == 0
        seen = await overlay.events_until(lambda e: e["kind"] == "goal")
        assert seen[-1]["counted_from"] == 107 and seen[-1]["target"] == 200
        await gift(live, ALICE, "k3", "rose", 5)
        shown = await overlay.events_until(lambda e: e["kind"] == "gift")
        # A page's progress: the gift's coins_total less the goal's counted_from.
        assert shown[-1]["coins_total"] - seen[-1]["counted_from"] == 5
    goal = (await live.get("/v1/streams/s1")).json()["goal"]
    assert goal == {"target": 200, "title": "Bigger mic", "counted_from": 107, "progress": 5}


@pytest.mark.parametrize(
    "body",
    [
        {"target": 0},
        {"target": -5},
        {"target": 2**53},
        {"target": 10.5},
        {"target": "10"},
        {"target": True},
        {},
        {"target": 10, "title": 5},
        {"target": 10, "title": "x" * 81},
        {"target": 10, "title": "line\nbreak"},
        {"target": 10, "title": "zero\u034fwidth"},  # a combining grapheme joiner
        {"target": 10, "title": "blank\u3164filler"},  # a Hangul filler
        {"target": 10, "reset": "yes"},
        {"target": 10, "colour": "red"},
    ],
)
async def test_an_absurd_goal_is_refused_and_changes_nothing(
    live: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    assert (await put_goal(live, {"target": 50, "title": "kept"})).status_code == 200
    assert_error(await put_goal(live, body), 422, "invalid_request")
    goal = (await live.get("/v1/streams/s1")).json()["goal"]
    assert (goal["target"], goal["title"]) == (50, "kept")


async def test_the_goal_refuses_everyone_but_the_streamer(live: httpx.AsyncClient) -> None:
    for who in (OTHER_STREAMER, ALICE, OVERLAY):
        assert_error(await put_goal(live, {"target": 10}, who), 403, "forbidden")
    assert (await live.get("/v1/streams/s1")).json()["goal"] is None


async def put_settings(http: httpx.AsyncClient, body: Any, who: Any = STREAMER) -> httpx.Response:
    return await http.put("/v1/streams/s1/settings", json=body, headers=who)


async def test_settings_are_stored_and_read_back(live: httpx.AsyncClient) -> None:
    response = await put_settings(live, {"messages": {"min_coins": 5, "blocked_words": ["darn"]}})
    assert response.status_code == 200, response.text
    whole = response.json()["messages"]
    assert (whole["min_coins"], whole["blocked_words"], whole["enabled"]) == (5, ["darn"], True)
    assert (await live.get("/v1/streams/s1/settings", headers=STREAMER)).json()["messages"] == whole
    for who in ({}, ALICE, OTHER_STREAMER, {"Authorization": "Bearer nonsense"}):
        public = (await live.get("/v1/streams/s1/settings", headers=who)).json()["messages"]
        assert public == {k: v for k, v in whole.items() if k != "blocked_words"}
    assert_error(await live.get("/v1/streams/nope/settings"), 404, "unknown_stream")


async def test_bad_settings_are_refused_over_http(live: httpx.AsyncClient) -> None:
    for who in (OTHER_STREAMER, ALICE, OVERLAY):
        assert_error(await put_settings(live, {"messages": {"tts": True}}, who), 403, "forbidden")
    for body in ({"messages": {"max_length": 0}}, {"messages": {"tts": "on"}}, [1]):
        assert_error(await put_settings(live, body), 422, "invalid_request")
    settings = (await live.get("/v1/streams/s1/settings", headers=STREAMER)).json()["messages"]
    assert (settings["tts"], settings["max_length"]) == (False, 150)


async def message_gift(
    http: httpx.AsyncClient, key: str, message: Any, gift_id: str = "rose", count: int = 1
) -> httpx.Response:
    body = {"gift_id": gift_id, "count": count, "idempotency_key": key, "message": message}
    return await http.post("/v1/streams/s1/gifts", json=body, headers=ALICE)


async def test_gift_messages_over_http_and_websocket_never_carry_a_blocked_word(
    live: httpx.AsyncClient, server: ServerThread, settings: Any
) -> None:
    blocked = {"messages": {"blocked_words": ["Darn"], "min_coins": 5, "max_length": 20}}
    assert (await put_settings(live, blocked)).status_code == 200
    async with (
        await WsClient.open(server.url, OVERLAY_TOKEN) as overlay,
        await WsClient.open(server.url, token("alice")) as viewer,
    ):
        await overlay.subscribe("s1")
        sent = await message_gift(live, "h1", " darn it ", "finger_heart")
        assert sent.status_code == 200, sent.text
        await viewer.send(
            {
                "type": "gift",
                "id": "w1",
                "stream_id": "s1",
                "gift_id": "finger_heart",
                "message": "DÄRN\tgood",
            }
        )
        assert (await viewer.answer_to("w1"))["type"] == "ack"
        await viewer.send(
            {"type": "gift", "id": "w2", "stream_id": "s1", "gift_id": "rose", "message": "hi"}
        )
        refused = await viewer.answer_to("w2")
        assert (refused["type"], refused["code"]) == ("error", "message_not_allowed")
        await viewer.send(
            {"type": "gift", "id": "w3", "stream_id": "s1", "gift_id": "finger_heart",
             "message": "x" * 21}
        )  # fmt: skip
        refused = await viewer.answer_to("w3")
        assert (refused["type"], refused["code"]) == ("error", "invalid_request")
        await viewer.send(
            {"type": "gift", "id": "w4", "stream_id": "s1", "gift_id": "rose", "message": 7}
        )
        assert (await viewer.answer_to("w4"))["code"] == "invalid_request"
        shown = await overlay.events_until(lambda e: e.get("message", "").endswith("good"))
        messages = [e["message"] for e in shown if "message" in e]
        assert messages == ["**** it", "**** good"]
        published = "".join(
            p if isinstance(p, str) else p.decode() for p in overlay.payloads
        ).encode()
    redis = await async_client(settings.redis_url)
    try:
        rows = await redis.xrange(keys.stream_history("s1"))
    finally:
        await redis.aclose()
    stored = b"".join(value for _, fields in rows for value in fields.values()).lower()
    for text in (stored, published.lower()):
        assert b"darn" not in text and "därn".encode() not in text and b"d\\u00e4rn" not in text


async def test_gift_message_refusals_over_http(live: httpx.AsyncClient) -> None:
    assert (await put_settings(live, {"messages": {"max_length": 4}})).status_code == 200
    assert_error(await message_gift(live, "a", "12345"), 422, "invalid_request")
    assert_error(await message_gift(live, "b", ["hi"]), 422, "invalid_request")
    assert (await message_gift(live, "c", "  1234  ")).status_code == 200
    assert_error(await message_gift(live, "c", "4321"), 409, "idempotency_conflict")
    assert (await put_settings(live, {"messages": {"enabled": False}})).status_code == 200
    assert_error(await message_gift(live, "d", "hey"), 403, "message_not_allowed")
    assert (await message_gift(live, "e", "   ")).status_code == 200  # empty: no message


async def test_openapi_documents_the_studio_endpoints_and_their_errors(
    http: httpx.AsyncClient,
) -> None:
    doc = (await http.get("/openapi.json")).json()

    def codes(path: str, method: str, status: str) -> list[str]:
        schema = doc["paths"][path][method]["responses"][status]["content"]["application/json"]
        return list(schema["schema"]["properties"]["error"]["properties"]["code"]["enum"])

    alerts = "/v1/streams/{stream_id}/alerts"
    assert set(codes(alerts, "post", "404")) == {"unknown_stream", "unknown_event", "unknown_gift"}
    assert codes(alerts, "post", "403") == ["forbidden"]
    assert "invalid_request" in codes("/v1/streams/{stream_id}/goal", "put", "422")
    assert "message_not_allowed" in codes("/v1/streams/{stream_id}/gifts", "post", "403")
    settings = "/v1/streams/{stream_id}/settings"
    assert {"get", "put"} <= set(doc["paths"][settings])
    assert "message" in doc["components"]["schemas"]["GiftRequest"]["properties"]


async def test_an_invisible_character_inside_a_blocked_word_does_not_let_it_through(
    live: httpx.AsyncClient, settings: Any
) -> None:
    """Characters that render as nothing between the letters of a blocked word (a
    combining grapheme joiner, a variation selector, a Hangul filler) are skipped by
    the matching: the word is masked, on the page it would read as the word."""
    blocked = {"messages": {"blocked_words": ["darn"], "min_coins": 0}}
    assert (await put_settings(live, blocked)).status_code == 200
    for i, hidden in enumerate(("\u034f", "\ufe0f", "\U000e0100", "\u3164", "\uffa0")):
        sent = await message_gift(live, f"inv{i}", f"d{hidden}a{hidden}r{hidden}n")
        assert sent.status_code == 200, sent.text
    redis = await async_client(settings.redis_url)
    try:
        rows = await redis.xrange(keys.stream_history("s1"))
    finally:
        await redis.aclose()
    shown = [
        orjson.loads(value)["message"]
        for _, fields in rows
        for value in fields.values()
        if b'"message"' in value
    ]
    assert len(shown) == 5
    for message in shown:
        assert not any(letter in message for letter in "darn"), ascii(message)
