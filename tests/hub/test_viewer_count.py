"""The viewer count a page shows (from `subscribed`, then each `viewers` event)
converges to the truth within about a second, whatever the order of joins and
leaves, on one worker or across several."""

from __future__ import annotations

from gifting_server.ledger.store import Store
from tests.factories import live_stream, token
from tests.faults import wait_until
from tests.hub.conftest import StartServer, Worker
from tests.hub.wsclient import WsClient

# Well under the ~10 s after which a worker's presence expires on its own.
CONVERGE_S = 5


async def all_show(clients: list[WsClient], count: int) -> None:
    def check() -> bool:
        return all(c.viewers_shown("s1") == count for c in clients)

    try:
        await wait_until(check, CONVERGE_S, f"every page to show {count} viewers")
    except AssertionError as e:
        shown = [c.viewers_shown("s1") for c in clients]
        raise AssertionError(f"{e}; they show {shown}") from None


async def test_two_viewers_who_close_and_reopen_at_once_both_show_two(
    start_server: StartServer, store: Store
) -> None:
    await live_stream(store)
    server = start_server()
    first = [await WsClient.open(server.url, token(name)) for name in ("ann", "bob")]
    for client in first:
        await client.subscribe("s1")
    await all_show(first, 2)
    for client in first:
        await client.close()

    again = [await WsClient.open(server.url, token(name)) for name in ("ann", "bob")]
    try:
        for client in again:
            await client.subscribe("s1")
        await all_show(again, 2)
    finally:
        for client in again:
            await client.close()


async def test_the_count_drops_soon_after_the_last_viewer_of_a_worker_leaves(
    two_workers: list[Worker], store: Store
) -> None:
    await live_stream(store)
    a, b = two_workers
    async with (
        await WsClient.open(a.url, token("ann")) as leaving,
        await WsClient.open(b.url, token("bob")) as staying,
    ):
        await leaving.subscribe("s1")
        await staying.subscribe("s1")
        await all_show([leaving, staying], 2)
        await leaving.send({"type": "unsubscribe", "stream_id": "s1"})
        await leaving.next_of("unsubscribed", stream_id="s1")
        await all_show([staying], 1)
