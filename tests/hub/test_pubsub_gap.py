"""A worker whose pub/sub connection drops misses what is published meanwhile: it
fills the gap from the history, and when the history no longer holds it, every
viewer learns it with a fresh `subscribed {recovered: false}` — never a jump."""

from __future__ import annotations

from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.redis_proxy import RedisProxy, subscribes
from tests.hub.test_recovery import send_gifts
from tests.hub.wsclient import MSGPACK, Message, WsClient


async def test_a_gap_older_than_the_history_resubscribes_every_viewer(
    start_proxied_server: StartServer, redis_proxy: RedisProxy, store: Store
) -> None:
    await fund(store, "carol", "coins_1000")
    await live_stream(store)
    server = start_proxied_server(history={"max_events": 10})
    async with (
        await WsClient.open(server.url, token("carol")) as sender,
        await WsClient.open(server.url, token("ann")) as viewer,
        await WsClient.open(server.url, token("bob"), encoding=MSGPACK) as other,
    ):
        for client in (viewer, other):
            await client.subscribe("s1")
        before = await sender.gift("s1", id="before")
        for client in (viewer, other):
            await client.events_until(lambda e: e["event_id"] == before["event_id"])

        resubscribing = redis_proxy.hold_request(subscribes)
        assert redis_proxy.cut(subscribes) == 1  # the worker's pub/sub connection
        await resubscribing.wait_held()  # it reconnected; its subscribe waits
        missed = await send_gifts(sender, "s1", 30, "missed")  # 3x what the history keeps
        resubscribing.release()

        fresh = {}
        for client in (viewer, other):
            fresh[client] = await client.next_of("subscribed", timeout=10, stream_id="s1")
            assert fresh[client]["recovered"] is False
            assert fresh[client]["last_event_id"] >= missed[-1]["event_id"]

        after = await sender.gift("s1", id="after")
        for client in (viewer, other):
            await client.events_until(lambda e: e["event_id"] == after["event_id"])
            at = next(i for i, m in enumerate(client.received) if m is fresh[client])
            before_ids = event_ids(client.received[:at])
            after_ids = event_ids(client.received[at + 1 :])
            # Up to the gap, then from where `subscribed` says: each once, in order.
            assert before_ids == list(range(before_ids[0], before_ids[-1] + 1))
            assert before_ids[-1] < missed[0]["event_id"]
            start = fresh[client]["last_event_id"]
            assert after_ids == list(range(start + 1, after_ids[-1] + 1)), after_ids
            assert after["event_id"] in after_ids


def event_ids(messages: list[Message]) -> list[int]:
    return [e["event_id"] for m in messages if m["type"] == "events" for e in m["events"]]
