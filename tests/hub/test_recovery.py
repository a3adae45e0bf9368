"""Nothing missed after a reconnect: `since` replays exactly the missed events in
order, then live ones; a gap older than the history answers `recovered: false`."""

from __future__ import annotations

import asyncio

from gifting_server.config import Overload
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.wsclient import MSGPACK, Event, Message, WsClient
from tests.topology import async_client

# Gifts in flight at once: a burst of hundreds would test overload (every gift in it
# answered within the Redis timeout), not recovery; and one user's gifts under way
# past [overload] max_in_flight_per_user are refused.
IN_FLIGHT = min(25, Overload().max_in_flight_per_user)


async def send_gifts(sender: WsClient, stream_id: str, n: int, prefix: str) -> list[Message]:
    """`n` gifts pipelined on one connection, IN_FLIGHT at a time; their acks, by
    event id."""
    answers = []
    for start in range(0, n, IN_FLIGHT):
        batch = range(start, min(n, start + IN_FLIGHT))
        ids = [await sender.send_gift(stream_id, id=f"{prefix}-{i}") for i in batch]
        answers += [await sender.answer_to(i) for i in ids]
    assert all(a["type"] == "ack" for a in answers), [a for a in answers if a["type"] != "ack"]
    return sorted(answers, key=lambda a: int(a["event_id"]))


def assert_contiguous(events: list[Event], after: int) -> None:
    ids = [e["event_id"] for e in events]
    assert ids == list(range(after + 1, after + 1 + len(ids))), ids


def live_gifts(events: list[Event]) -> list[Event]:
    return [e for e in events if e["kind"] == "gift" and not e["streak_end"]]


async def test_since_replays_exactly_the_missed_gifts_then_live_ones(
    start_server: StartServer, store: Store
) -> None:
    await fund(store, "carol", "coins_1000")
    await live_stream(store)
    server = start_server()
    async with await WsClient.open(server.url, token("carol")) as sender:
        async with await WsClient.open(server.url, token("ann")) as viewer:
            await viewer.subscribe("s1")
            first = await sender.gift("s1", id="before")
            seen = await viewer.events_until(lambda e: e["event_id"] == first["event_id"])
            last_seen = seen[-1]["event_id"]

        missed = [await sender.gift("s1", id=f"missed-{i}") for i in range(50)]
        assert all(a["type"] == "ack" for a in missed)
        missed_ids = [a["event_id"] for a in missed]

        async with await WsClient.open(server.url, token("ann"), encoding=MSGPACK) as viewer:
            subscribed = await viewer.subscribe("s1", since=last_seen)
            assert subscribed["recovered"] is True
            assert subscribed["last_event_id"] >= missed_ids[-1]
            replay = await viewer.events_until(lambda e: e["event_id"] == missed_ids[-1])
            assert_contiguous(replay, after=last_seen)  # no gap, no duplicate
            gifts = live_gifts(replay)
            assert [e["event_id"] for e in gifts] == missed_ids
            assert [e["combo"] for e in gifts] == list(range(2, 52))
            assert viewer.received[0]["type"] == "subscribed"

            live = await sender.gift("s1", id="after")
            more = await viewer.events_until(lambda e: e["event_id"] == live["event_id"])
            assert_contiguous(replay + more, after=last_seen)
            assert [e["event_id"] for e in live_gifts(more)] == [live["event_id"]]
            await viewer.barrier()
            assert not viewer.unread_events


async def test_since_while_gifts_keep_flowing_has_no_gap_and_no_duplicate(
    start_server: StartServer, store: Store
) -> None:
    await fund(store, "carol", "coins_1000")
    await live_stream(store)
    server = start_server()
    async with (
        await WsClient.open(server.url, token("carol")) as sender,
        await WsClient.open(server.url, token("bob")) as witness,
    ):
        await witness.subscribe("s1")  # keeps the room (and its recent events) alive
        first = await send_gifts(sender, "s1", 20, "early")
        since = first[4]["event_id"]
        flowing = asyncio.create_task(send_gifts(sender, "s1", 200, "during"))
        async with await WsClient.open(server.url, token("ann")) as viewer:
            subscribed = await viewer.subscribe("s1", since=since)
            assert subscribed["recovered"] is True
            during = await flowing
            last = during[-1]["event_id"]
            events = await viewer.events_until(lambda e: e["event_id"] == last, timeout=10)
            assert_contiguous(events, after=since)
            gift_ids = {e["event_id"] for e in live_gifts(events)}
            assert gift_ids >= {a["event_id"] for a in first[5:] + during}


async def test_since_older_than_the_history_answers_not_recovered(
    start_server: StartServer, store: Store, redis_url: str
) -> None:
    await fund(store, "carol", "coins_1000")
    await live_stream(store)
    server = start_server(history={"max_events": 10})
    async with await WsClient.open(server.url, token("carol")) as sender:
        async with await WsClient.open(server.url, token("ann")) as viewer:
            await viewer.subscribe("s1")
            first = await sender.gift("s1", id="before")
            await viewer.events_until(lambda e: e["event_id"] == first["event_id"])

        gone = await send_gifts(sender, "s1", 200, "gone")
        history = await async_client(redis_url)
        try:
            assert await history.xlen(keys.stream_history("s1")) < 200  # trimmed
        finally:
            await history.aclose()

        async with await WsClient.open(server.url, token("ann")) as viewer:
            subscribed = await viewer.subscribe("s1", since=first["event_id"])
            assert subscribed["recovered"] is False
            assert subscribed["last_event_id"] >= gone[-1]["event_id"]
            live = await sender.gift("s1", id="after")
            events = await viewer.events_until(lambda e: e["event_id"] == live["event_id"])
            assert all(e["event_id"] > gone[-1]["event_id"] for e in events)  # no partial replay


async def test_since_at_the_newest_event_replays_nothing(
    start_server: StartServer, store: Store
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    server = start_server()
    async with await WsClient.open(server.url, token("carol")) as sender:
        done = await send_gifts(sender, "s1", 3, "done")
        async with await WsClient.open(server.url, token("ann")) as viewer:
            subscribed = await viewer.subscribe("s1", since=done[-1]["event_id"])
            assert subscribed["recovered"] is True
            live = await sender.gift("s1", id="after")
            events = await viewer.events_until(lambda e: e["event_id"] == live["event_id"])
            assert_contiguous(events, after=done[-1]["event_id"])


async def test_since_newer_than_the_stream_answers_not_recovered_then_live_events(
    start_server: StartServer, store: Store
) -> None:
    """A `since` the stream never reached (a stale or made-up id) cannot be
    recovered; the client must still get the live events, not skip up to it."""
    await fund(store, "carol")
    await live_stream(store)
    server = start_server()
    async with await WsClient.open(server.url, token("carol")) as sender:
        done = await send_gifts(sender, "s1", 3, "done")
        async with await WsClient.open(server.url, token("ann")) as viewer:
            subscribed = await viewer.subscribe("s1", since=1000)
            assert subscribed["recovered"] is False
            assert subscribed["last_event_id"] == done[-1]["event_id"]
            live = await sender.gift("s1", id="after")
            events = await viewer.events_until(lambda e: e["event_id"] == live["event_id"])
            assert_contiguous(events, after=done[-1]["event_id"])
