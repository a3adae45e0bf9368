"""A consumer that stops reading is cut off with 4009; it never slows the 200
others, and the server's buffers for it stay within the configured bounds."""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass

from websockets.frames import Close

from gifting_server.hub.connection import HubConnection
from gifting_server.ledger.store import Store
from tests.conftest import ServerThread
from tests.factories import fund, live_stream, token
from tests.hub.conftest import StartServer
from tests.hub.wsclient import Message, RawClient, WsClient

VIEWERS = 200
BATCH = 25
MAX_BATCHES = 60
LIMITS = {"outbox_frames": 8, "outbox_bytes": 16_384, "write_buffer_bytes": 8_192}
# Long ids and names make each gift event ~600 bytes, so little data fills the buffers.
SENDER = "g" * 64
# Every gift is the one sender's, a batch under way at once.
ONE_SENDER = {"max_in_flight_per_user": BATCH}


@dataclass
class Peak:
    outbox_frames: int = 0
    outbox_bytes: int = 0
    write_buffer: int = 0
    kernel_send_buffer: int = 0


def hub_connections(server: ServerThread) -> list[HubConnection]:
    found: list[HubConnection] = []
    for connection in list(server.server.server_state.connections):
        if isinstance(connection, HubConnection):
            found.append(connection)
    return found


def connection_of(server: ServerThread, user_id: str) -> HubConnection:
    for connection in hub_connections(server):
        if connection.session is not None and connection.session.identity.user_id == user_id:
            return connection
    raise AssertionError(f"no connection of {user_id} on the server")


def measure(server: ServerThread, peak: Peak) -> None:
    """What the server holds for each connection, read from the server's objects."""
    for connection in hub_connections(server):
        peak.outbox_frames = max(peak.outbox_frames, len(connection.outbox))
        peak.outbox_bytes = max(peak.outbox_bytes, connection.outbox_bytes)
        transport = connection.transport
        if transport is None or transport.is_closing():
            continue
        peak.write_buffer = max(peak.write_buffer, transport.get_write_buffer_size())
        sock = transport.get_extra_info("socket")
        if sock is not None:
            size = sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)
            peak.kernel_send_buffer = max(peak.kernel_send_buffer, size)


async def send_batch(sender: WsClient, prefix: str) -> list[Message]:
    ids = [await sender.send_gift("s1", id=f"{prefix}-{i}") for i in range(BATCH)]
    answers = [await sender.answer_to(i, timeout=10) for i in ids]
    assert all(a["type"] == "ack" for a in answers), answers
    return answers


async def all_reached(viewers: list[WsClient], event_id: int) -> None:
    await asyncio.gather(
        *(v.events_until(lambda e: e["event_id"] >= event_id, timeout=20) for v in viewers)
    )


async def test_slow_consumer_is_closed_with_4009_and_others_get_every_event(
    start_server: StartServer, store: Store
) -> None:
    await fund(store, SENDER, "coins_10000")
    await live_stream(store)
    server = start_server(websocket=LIMITS, overload=ONE_SENDER)
    peak = Peak()
    viewers = list(
        await asyncio.gather(
            *(WsClient.open(server.url, token(f"viewer{i}")) for i in range(VIEWERS))
        )
    )
    slow = RawClient(server.port, token("slow"), rcvbuf=4096)
    try:
        subscribed = await asyncio.gather(*(v.subscribe("s1") for v in viewers))
        start = max(s["last_event_id"] for s in subscribed)
        await slow.open()
        await slow.send({"type": "subscribe", "stream_id": "s1"})
        assert (await slow.next_message())["type"] == "subscribed"
        slow_side = connection_of(server, "slow")  # from here on it never reads

        acked: list[int] = []
        drained: asyncio.Task[Close] | None = None
        async with await WsClient.open(server.url, token(SENDER, name="N" * 64)) as sender:
            for batch in range(MAX_BATCHES):
                acked += [a["event_id"] for a in await send_batch(sender, f"b{batch}")]
                await all_reached(viewers, max(acked))  # the others keep up all along
                measure(server, peak)
                if slow_side.closing:
                    # It was cut: read what reached its socket, up to the close frame.
                    drained = asyncio.create_task(slow.read_until_close(timeout=10))
                    break
            assert drained is not None, f"not cut off after {len(acked)} gifts"
            # the others go on after the cut
            acked += [a["event_id"] for a in await send_batch(sender, "after")]
            await all_reached(viewers, max(acked))
            measure(server, peak)

        close = await drained
        assert close.code == 4009
        assert "since" in close.reason

        for viewer in viewers:
            ids = [e["event_id"] for e in viewer.events]
            assert ids == list(range(start + 1, start + 1 + len(ids))), "a gap or a duplicate"
            assert set(acked) <= set(ids)
            assert not viewer.done, (viewer.close_code, viewer.close_reason)
            assert not viewer.unread  # nothing but events: no error frames

        # What the server held stayed within the configured bounds.
        largest_frame = max(len(p) for v in viewers for p in v.payloads) + 14
        assert peak.outbox_frames <= LIMITS["outbox_frames"]
        assert peak.outbox_bytes <= LIMITS["outbox_bytes"]
        assert peak.write_buffer <= LIMITS["write_buffer_bytes"] + largest_frame + 128
        assert peak.kernel_send_buffer <= 2 * LIMITS["write_buffer_bytes"]  # Linux doubles it
        # the slow one got far less than the others before it was cut
        assert slow.bytes_read < sum(len(p) for p in viewers[0].payloads)
    finally:
        slow.shutdown()
        await asyncio.gather(*(v.close() for v in viewers))


async def test_a_viewer_cut_with_4009_resumes_with_since_and_misses_nothing(
    start_server: StartServer, store: Store
) -> None:
    """What a client does on 4009: reconnect and resubscribe with `since`, the last
    event it read. It gets every event after it, once, in order, then live ones."""
    await fund(store, SENDER, "coins_10000")
    await live_stream(store)
    server = start_server(websocket=LIMITS, overload=ONE_SENDER)
    slow = RawClient(server.port, token("slow"), rcvbuf=4096)
    try:
        await slow.open()
        await slow.send({"type": "subscribe", "stream_id": "s1"})
        subscribed = await slow.next_message()
        assert subscribed["type"] == "subscribed"
        slow_side = connection_of(server, "slow")  # from here on it does not read
        async with await WsClient.open(server.url, token(SENDER, name="N" * 64)) as sender:
            for batch in range(MAX_BATCHES):
                await send_batch(sender, f"b{batch}")
                if slow_side.closing:
                    break
            assert slow_side.closing, "not cut off"
            close = await slow.read_until_close(timeout=10)
            assert close.code == 4009
            read = [
                e["event_id"] for m in slow.messages if m["type"] == "events" for e in m["events"]
            ]
            since = read[-1] if read else subscribed["last_event_id"]
            assert read == list(range(subscribed["last_event_id"] + 1, since + 1))

            async with await WsClient.open(server.url, token("slow")) as again:
                resumed = await again.subscribe("s1", since=since)
                assert resumed["recovered"] is True, resumed
                last = (await send_batch(sender, "after"))[-1]["event_id"]
                await again.events_until(lambda e: e["event_id"] == last, timeout=10)
                ids = [e["event_id"] for e in again.events]
                assert ids == list(range(since + 1, since + 1 + len(ids))), ids
    finally:
        slow.shutdown()
