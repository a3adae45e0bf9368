"""Two real `gifting-server serve` processes on one Redis: viewers on either get
every gift sent through either, and a streak alternating between them ends once."""

from __future__ import annotations

import httpx
import orjson

from gifting_server.ledger.store import Store
from tests.factories import auth, fund, live_stream, token
from tests.hub.conftest import Worker
from tests.hub.streaks import (
    STREAK_TIMEOUT_S,
    assert_one_streak,
    assert_streak_closed_for_good,
    history_of,
    is_streak_end,
)
from tests.hub.wsclient import MSGPACK, Event, WsClient, message_id


def gifts_only(events: list[Event]) -> list[Event]:
    return [e for e in events if e["kind"] == "gift"]


async def test_viewers_on_each_worker_get_gifts_sent_through_either(
    two_workers: list[Worker], store: Store
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    a, b = two_workers
    async with (
        await WsClient.open(a.url, token("ann")) as viewer_a,
        await WsClient.open(b.url, token("bob"), encoding=MSGPACK) as viewer_b,
        await WsClient.open(a.url, token("carol")) as sender_a,
        await WsClient.open(b.url, token("carol")) as sender_b,
        httpx.AsyncClient(timeout=10) as http,
    ):
        await viewer_a.subscribe("s1")
        await viewer_b.subscribe("s1")
        event_ids = []
        for worker in (a, b):
            response = await http.post(
                f"{worker.url}/v1/streams/s1/gifts",
                json={"gift_id": "rose", "count": 1, "idempotency_key": message_id("http")},
                headers=auth("carol"),
            )
            assert response.status_code == 200, response.text
            event_ids.append(response.json()["event_id"])
        for sender in (sender_a, sender_b):
            ack = await sender.gift("s1", "finger_heart", id=message_id("ws"))
            assert ack["type"] == "ack", ack
            event_ids.append(ack["event_id"])

        last = max(event_ids)
        seen_a = await viewer_a.events_until(lambda e: e["event_id"] == last)
        seen_b = await viewer_b.events_until(lambda e: e["event_id"] == last)
        assert [e["event_id"] for e in gifts_only(seen_a)] == event_ids
        assert gifts_only(seen_a) == gifts_only(seen_b)
        assert [e["gift"]["id"] for e in gifts_only(seen_a)] == ["rose"] * 2 + ["finger_heart"] * 2
        for client in (viewer_a, viewer_b, sender_a, sender_b):
            client.assert_no_traceback()


async def test_a_streak_alternating_between_workers_ends_once(
    two_workers: list[Worker], store: Store, redis_url: str
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    a, b = two_workers
    async with (
        await WsClient.open(a.url, token("ann")) as viewer_a,
        await WsClient.open(b.url, token("bob")) as viewer_b,
        await WsClient.open(a.url, token("carol")) as sender_a,
        await WsClient.open(b.url, token("carol")) as sender_b,
    ):
        await viewer_a.subscribe("s1")
        await viewer_b.subscribe("s1")
        senders = (sender_a, sender_b)
        acks = [await senders[i % 2].gift("s1", "rose", id=message_id("tap")) for i in range(15)]
        assert all(a["type"] == "ack" for a in acks), acks

        seen_a = await viewer_a.events_until(is_streak_end, timeout=STREAK_TIMEOUT_S)
        seen_b = await viewer_b.events_until(is_streak_end, timeout=STREAK_TIMEOUT_S)
        assert_one_streak(seen_a, acks, "carol", "rose", 15)
        assert gifts_only(seen_a) == gifts_only(seen_b)

        await assert_streak_closed_for_good(redis_url, "s1", "carol", "rose")
        stored = [orjson.loads(raw) for raw in await history_of(redis_url, "s1")]
        assert len([e for e in stored if is_streak_end(e)]) == 1
        for viewer in (viewer_a, viewer_b):
            await viewer.barrier()
            assert len([e for e in viewer.events if is_streak_end(e)]) == 1


async def test_a_viewer_of_a_killed_worker_resumes_on_the_other_with_since(
    two_workers: list[Worker], store: Store
) -> None:
    """A worker dies (SIGKILL) while gifts flow: its viewer, moved to the other
    worker with `since`, gets every event after the last it read, once, in order,
    and the streak still ends once."""
    await fund(store, "carol")
    await live_stream(store)
    a, b = two_workers
    async with (
        await WsClient.open(b.url, token("carol")) as sender,
        await WsClient.open(b.url, token("bob")) as witness,
    ):
        viewer = await WsClient.open(a.url, token("ann"), encoding=MSGPACK)
        await viewer.subscribe("s1")
        await witness.subscribe("s1")
        first = await sender.gift("s1", id="before-kill")
        await viewer.events_until(lambda e: e["event_id"] == first["event_id"])
        a.process.kill()
        a.process.wait()
        await viewer.closed()
        await viewer.close()
        since = viewer.events[-1]["event_id"]
        during = [(await sender.gift("s1", id=f"after-kill-{i}"))["event_id"] for i in range(3)]

        async with await WsClient.open(b.url, token("ann"), encoding=MSGPACK) as moved:
            resumed = await moved.subscribe("s1", since=since)
            assert resumed["recovered"] is True, resumed
            await moved.events_until(lambda e: e["kind"] == "gift" and e["streak_end"], timeout=10)
            ids = [e["event_id"] for e in moved.events]
            assert ids == list(range(since + 1, since + 1 + len(ids))), ids
            assert set(during) <= set(ids)
            ends = [e for e in moved.events if e["kind"] == "gift" and e["streak_end"]]
            assert len(ends) == 1, ends
            moved.assert_no_traceback()
