"""Combos and streaks on one worker: one counter per (sender, stream, gift), and
exactly one `streak_end` per streak once its quiet window passed."""

from __future__ import annotations

import orjson

from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.streaks import (
    STREAK_TIMEOUT_S,
    assert_one_streak,
    assert_streak_closed_for_good,
    history_of,
    is_streak_end,
)
from tests.hub.wsclient import MSGPACK, WsClient, message_id


async def test_fifteen_quick_roses_make_one_streak_with_one_end(
    start_server: StartServer, store: Store, redis_url: str
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    server = start_server(limits={"combo_window_ms": 1500})
    async with (
        await WsClient.open(server.url, token("ann")) as viewer,
        await WsClient.open(server.url, token("bob"), encoding=MSGPACK) as overlay_like,
        await WsClient.open(server.url, token("carol")) as sender,
    ):
        await viewer.subscribe("s1")
        await overlay_like.subscribe("s1")
        acks = [await sender.gift("s1", "rose", id=message_id("rose")) for _ in range(15)]
        assert all(a["type"] == "ack" for a in acks), acks

        events = await viewer.events_until(is_streak_end, timeout=STREAK_TIMEOUT_S)
        assert_one_streak(events, acks, "carol", "rose", 15)
        others = await overlay_like.events_until(is_streak_end, timeout=STREAK_TIMEOUT_S)
        assert [e for e in others if e["kind"] == "gift"] == [
            e for e in events if e["kind"] == "gift"
        ]

        await assert_streak_closed_for_good(redis_url, "s1", "carol", "rose")
        stored = [orjson.loads(raw) for raw in await history_of(redis_url, "s1")]
        assert len([e for e in stored if is_streak_end(e)]) == 1
        await viewer.barrier()
        assert len([e for e in viewer.events if is_streak_end(e)]) == 1

        # the next tap starts a new streak
        again = await sender.gift("s1", "rose", id=message_id("rose"))
        assert again["combo"] == 1


async def test_streaks_of_different_gifts_are_counted_apart(
    start_server: StartServer, store: Store, redis_url: str
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    server = start_server(limits={"combo_window_ms": 1000})
    async with (
        await WsClient.open(server.url, token("ann")) as viewer,
        await WsClient.open(server.url, token("carol")) as sender,
    ):
        await viewer.subscribe("s1")
        roses, ggs = [], []
        for _ in range(5):
            roses.append(await sender.gift("s1", "rose", id=message_id("rose")))
            ggs.append(await sender.gift("s1", "gg", count=2, id=message_id("gg")))
        assert [a["combo"] for a in roses] == [1, 2, 3, 4, 5]
        assert [a["combo"] for a in ggs] == [2, 4, 6, 8, 10]

        first = await viewer.events_until(is_streak_end, timeout=STREAK_TIMEOUT_S)
        rest = await viewer.events_until(is_streak_end, timeout=STREAK_TIMEOUT_S)
        ends = {e["gift"]["id"]: e["combo"] for e in (first + rest) if is_streak_end(e)}
        assert ends == {"rose": 5, "gg": 10}
        for gift_id in ("rose", "gg"):
            await assert_streak_closed_for_good(redis_url, "s1", "carol", gift_id)
        stored = [orjson.loads(raw) for raw in await history_of(redis_url, "s1")]
        assert sorted(e["gift"]["id"] for e in stored if is_streak_end(e)) == ["gg", "rose"]
