"""`since` at every boundary, raced with gifts: after `subscribed`, a client takes
events strictly after its `last_event_id` (or after its `since` when recovered),
each once, in order. The server reaches Redis through a proxy that holds the
hub's history read, so that events reach the worker while a join reads."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gifting_server.ledger import keys
from gifting_server.ledger.store import Store
from gifting_server.protocol import MAX_EVENT_ID
from tests.factories import fund, live_stream, token
from tests.faults import wait_until
from tests.hub.conftest import StartServer
from tests.hub.redis_proxy import RedisProxy, reads_history
from tests.hub.wsclient import Message, WsClient
from tests.topology import async_client


def after_subscribed(received: list[Message], stream_id: str) -> tuple[Message, list[int]]:
    """The last `subscribed` of the stream and the event ids that followed it."""
    at = max(
        i
        for i, m in enumerate(received)
        if m["type"] == "subscribed" and m["stream_id"] == stream_id
    )
    ids = [
        e["event_id"]
        for m in received[at + 1 :]
        if m["type"] == "events" and m["stream_id"] == stream_id
        for e in m["events"]
    ]
    return received[at], ids


@pytest.mark.parametrize(
    "since_of",
    [lambda newest: newest + 1, lambda newest: MAX_EVENT_ID, lambda newest: 0],
    ids=["newest+1", "max", "older than the history"],
)
async def test_a_since_not_recovered_while_gifts_flow_starts_after_last_event_id(
    start_proxied_server: StartServer,
    redis_proxy: RedisProxy,
    store: Store,
    redis_url: str,
    since_of: Callable[[int], int],
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    server = start_proxied_server()
    async with (
        await WsClient.open(server.url, token("carol")) as sender,
        await WsClient.open(server.url, token("bob")) as witness,
        await WsClient.open(server.url, token("ann")) as viewer,
    ):
        await witness.subscribe("s1")
        for i in range(3):
            await sender.gift("s1", id=f"seen-{i}")

        # The top gifters and the viewer count follow within a second: then the
        # stream is quiet, and `newest` is its newest event.
        def settled() -> int | None:
            top = [e for e in witness.events if e["kind"] == "leaderboard"]
            if witness.viewers_shown("s1") != 1 or not top or not top[-1]["entries"]:
                return None
            if top[-1]["entries"][0]["coins"] != 3:  # three roses
                return None
            return int(witness.events[-1]["event_id"])

        newest = await wait_until(settled, 5, "the top gifters and the viewer count")
        redis = await async_client(redis_url)
        try:  # the history keeps two: event 1 is gone
            await redis.xtrim(keys.stream_history("s1"), maxlen=2, approximate=False)
        finally:
            await redis.aclose()

        since = since_of(newest)
        gate = redis_proxy.hold_reply(reads_history("s1"))
        await viewer.send({"type": "subscribe", "stream_id": "s1", "since": since})
        await gate.wait_held()  # Redis answered: nothing past `newest`
        between = [(await sender.gift("s1", id=f"between-{i}"))["event_id"] for i in range(2)]
        await witness.events_until(lambda e: e["event_id"] == between[-1])  # the worker has them
        gate.release()

        subscribed = await viewer.next_of("subscribed", stream_id="s1")
        assert subscribed["recovered"] is False, subscribed
        later = (await sender.gift("s1", id="later"))["event_id"]
        await viewer.events_until(lambda e: e["event_id"] == later)
        subscribed, ids = after_subscribed(viewer.received, "s1")
        start = subscribed["last_event_id"]
        # Live events after last_event_id: none at or before it, each once, in order.
        assert ids == list(range(start + 1, start + 1 + len(ids))), (start, ids)
        assert later in ids
