"""pub/sub drops a second time while the worker is still refilling the first gap
from the history: the events published during the second outage must reach the
viewers too (from the history), or the viewers must get a fresh
`subscribed {recovered: false}` — never a silent jump over them."""

from __future__ import annotations

from gifting_server.hub.hub import Hub
from gifting_server.ledger.store import Store
from tests.conftest import ServerThread
from tests.factories import fund, live_stream, token
from tests.faults import wait_until
from tests.hub.conftest import StartServer
from tests.hub.redis_proxy import RedisProxy, reads_history, subscribes
from tests.hub.test_subscribe_races import followed_by_a_worker
from tests.hub.wsclient import Message, WsClient


def hub_of(server: ServerThread) -> Hub:
    hub: Hub = server.server.config.app.state.hub  # type: ignore[union-attr]
    return hub


def deliveries(received: list[Message]) -> list[object]:
    """Event ids in order, with a marker where a fresh `subscribed` restarted them."""
    out: list[object] = []
    for message in received:
        if message["type"] == "subscribed":
            out.append(("subscribed", message["recovered"], message["last_event_id"]))
        elif message["type"] == "events":
            out += [e["event_id"] for e in message["events"]]
    return out


async def test_a_second_pub_sub_drop_during_the_refill_loses_no_event_silently(
    start_proxied_server: StartServer, redis_proxy: RedisProxy, store: Store, redis_url: str
) -> None:
    await fund(store, "carol")
    await live_stream(store)
    server = start_proxied_server()
    hub = hub_of(server)
    async with (
        await WsClient.open(server.url, token("carol")) as sender,
        await WsClient.open(server.url, token("ann")) as viewer,
    ):
        await viewer.subscribe("s1")
        first = await sender.gift("s1", id="first")
        await viewer.events_until(lambda e: e["event_id"] == first["event_id"])

        refill = redis_proxy.hold_reply(reads_history("s1"))
        assert redis_proxy.cut(subscribes) == 1  # first drop
        await refill.wait_held()  # the refill's history read is answered, not yet taken

        resubscribing = redis_proxy.hold_request(subscribes)
        await wait_until(lambda: redis_proxy.cut(subscribes), 10, "pub/sub to reconnect")
        await resubscribing.wait_held()  # second drop: no pub/sub until released
        missed = [(await sender.gift("s1", id=f"missed-{i}"))["event_id"] for i in range(2)]
        resubscribing.release()

        async def followed() -> bool:
            return bool(await followed_by_a_worker(redis_url, ["s1"]))

        await wait_until(followed, 10, "pub/sub to be back")
        last = (await sender.gift("s1", id="last"))["event_id"]
        room = hub.rooms["s1"]
        await wait_until(
            lambda: any(event_id == last for event_id, _ in room.held), 10, "the worker to hold it"
        )
        refill.release()

        await viewer.events_until(lambda e: e["event_id"] == last, timeout=10)
        seen = deliveries(viewer.received)
        restarted = [d for d in seen if isinstance(d, tuple) and d[1] is False]
        if not restarted:
            ids = [d for d in seen if isinstance(d, int)]
            assert ids == list(range(ids[0], ids[-1] + 1)), ids  # missed events included
            assert set(missed) <= set(ids)
