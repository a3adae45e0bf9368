"""Fan-out on one worker: both encodings, subscribe/unsubscribe, ping, overlays,
and the state events (viewers, leaderboard, stream_ended)."""

from __future__ import annotations

import httpx

from gifting_server.auth import Role
from gifting_server.ledger.store import Store
from tests.factories import auth, fund, live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.wsclient import MSGPACK, WsClient


async def test_json_and_msgpack_viewers_get_the_same_gift(
    start_server: StartServer, store: Store
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    server = start_server()
    async with (
        await WsClient.open(server.url, token("ann")) as as_json,
        await WsClient.open(server.url, token("bob"), encoding=MSGPACK) as as_msgpack,
        await WsClient.open(server.url, token("carol", name="Carol")) as sender,
    ):
        for client in (as_json, as_msgpack):
            subscribed = await client.subscribe("s1")
            assert subscribed["recovered"] is True
            assert subscribed["last_event_id"] == 0
        ack = await sender.gift("s1", "rose", count=3, id="first-gift")
        assert ack == {"type": "ack", "id": "first-gift", "event_id": 1, "coins": 97, "combo": 3}

        def is_the_gift(event: dict[str, object]) -> bool:
            return bool(event["event_id"] == ack["event_id"])

        seen_json = await as_json.events_until(is_the_gift)
        seen_msgpack = await as_msgpack.events_until(is_the_gift)
        assert seen_json[-1] == seen_msgpack[-1]
        gift = seen_json[-1]
        assert gift["kind"] == "gift"
        assert gift["sender"] == {"id": "carol", "name": "Carol"}
        assert gift["gift"] == {"id": "rose", "name": "Rose", "coins": 1, "tier": 1}
        assert (gift["count"], gift["combo"], gift["streak_end"], gift["coins_total"]) == (
            3,
            3,
            False,
            3,
        )
        assert all(m["type"] == "events" and m["stream_id"] == "s1" for m in as_json.received[1:])
        # the sender did not subscribe: it gets its answer, not the broadcast
        assert sender.events == []
        for client in (as_json, as_msgpack, sender):
            client.assert_no_traceback()


async def test_ping_answers_pong_in_both_encodings(start_server: StartServer, store: Store) -> None:
    server = start_server()
    async with (
        await WsClient.open(server.url, token("ann")) as as_json,
        await WsClient.open(server.url, token("bob"), encoding=MSGPACK) as as_msgpack,
    ):
        for client in (as_json, as_msgpack):
            await client.send({"type": "ping"})
            assert await client.next_of("pong") == {"type": "pong"}


async def test_token_in_authorization_header(start_server: StartServer, store: Store) -> None:
    await live_stream(store)
    server = start_server()
    async with await WsClient.open(server.url, headers=auth("ann")) as client:
        assert (await client.subscribe("s1"))["recovered"] is True


async def test_unsubscribe_answers_and_stops_delivery(
    start_server: StartServer, store: Store
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    server = start_server()
    async with (
        await WsClient.open(server.url, token("ann")) as leaving,
        await WsClient.open(server.url, token("bob")) as staying,
        await WsClient.open(server.url, token("carol")) as sender,
    ):
        await leaving.subscribe("s1")
        await staying.subscribe("s1")
        first = await sender.gift("s1")
        await leaving.events_until(lambda e: e["event_id"] == first["event_id"])

        await leaving.send({"type": "unsubscribe", "stream_id": "s1"})
        assert await leaving.next_of("unsubscribed") == {"type": "unsubscribed", "stream_id": "s1"}
        gone_at = len(leaving.received)

        second = await sender.gift("s1")
        await staying.events_until(lambda e: e["event_id"] == second["event_id"])
        # both were written in the same flush; the pong comes after anything still due
        await leaving.barrier()
        assert [m["type"] for m in leaving.received[gone_at:]] == ["pong"]

        # unsubscribing from a stream it does not follow is answered all the same
        await leaving.send({"type": "unsubscribe", "stream_id": "other"})
        assert await leaving.next_of("unsubscribed") == {
            "type": "unsubscribed",
            "stream_id": "other",
        }


async def test_overlay_token_subscribes_only_to_its_own_stream(
    start_server: StartServer, store: Store
) -> None:
    await fund(store, "carol")
    await live_stream(store, "s1", "streamer1")
    await live_stream(store, "s2", "streamer2")
    server = start_server()
    overlay = token("streamer1", Role.OVERLAY, stream_id="s1")
    async with (
        await WsClient.open(server.url, overlay) as client,
        await WsClient.open(server.url, token("carol")) as sender,
    ):
        await client.send({"type": "subscribe", "stream_id": "s2"})
        error = await client.next_of("error")
        assert error["code"] == "forbidden"
        assert "id" not in error

        assert (await client.subscribe("s1"))["recovered"] is True
        other = await sender.gift("s2")
        mine = await sender.gift("s1")
        events = await client.events_until(lambda e: e["event_id"] == mine["event_id"])
        assert all(e["kind"] != "gift" or e["event_id"] == mine["event_id"] for e in events)
        assert other["type"] == "ack"
        client.assert_no_traceback()


async def test_overlay_and_streamer_tokens_cannot_gift(
    start_server: StartServer, store: Store
) -> None:
    await live_stream(store)
    server = start_server()
    for who in (
        token("streamer1", Role.OVERLAY, stream_id="s1"),
        token("streamer1", Role.STREAMER),
    ):
        async with await WsClient.open(server.url, who) as client:
            answer = await client.gift("s1", id="not-allowed")
            assert answer["type"] == "error"
            assert (answer["code"], answer["id"]) == ("forbidden", "not-allowed")
            client.assert_no_traceback()


async def test_viewers_event_counts_connections(start_server: StartServer, store: Store) -> None:
    await live_stream(store)
    server = start_server()
    async with await WsClient.open(server.url, token("ann")) as first:
        await first.subscribe("s1")
        async with await WsClient.open(server.url, token("bob")) as second:
            await second.subscribe("s1")
            two = await first.events_until(
                lambda e: e["kind"] == "viewers" and e["count"] == 2, timeout=10
            )
            assert set(two[-1]) == {"event_id", "kind", "ts", "count"}
            await second.events_until(lambda e: e["event_id"] == two[-1]["event_id"])
            assert second.viewers_shown("s1") == 2
        one = await first.events_until(
            lambda e: e["kind"] == "viewers" and e["count"] == 1, timeout=10
        )
        assert one[-1]["event_id"] > two[-1]["event_id"]


async def test_leaderboard_event_follows_a_gift(start_server: StartServer, store: Store) -> None:
    await fund(store, "carol")
    await live_stream(store)
    server = start_server()
    async with (
        await WsClient.open(server.url, token("ann")) as viewer,
        await WsClient.open(server.url, token("carol", name="Carol")) as sender,
    ):
        await viewer.subscribe("s1")
        ack = await sender.gift("s1", "finger_heart", count=2)
        assert ack["type"] == "ack"
        events = await viewer.events_until(
            lambda e: e["kind"] == "leaderboard" and e["entries"] != [], timeout=10
        )
        board = events[-1]
        assert board["event_id"] > ack["event_id"]
        assert board["period"] == "stream"
        assert board["entries"] == [{"rank": 1, "user_id": "carol", "name": "Carol", "coins": 10}]


async def test_stream_ended_event_after_the_streamer_ends_it(
    start_server: StartServer, store: Store
) -> None:
    await live_stream(store)
    server = start_server()
    async with (
        await WsClient.open(server.url, token("ann"), encoding=MSGPACK) as viewer,
        httpx.AsyncClient(base_url=server.url, timeout=10) as http,
    ):
        await viewer.subscribe("s1")
        response = await http.post("/v1/streams/s1/end", headers=auth("streamer1", Role.STREAMER))
        assert response.status_code == 200, response.text
        events = await viewer.events_until(lambda e: e["kind"] == "stream_ended")
        assert set(events[-1]) == {"event_id", "kind", "ts"}
