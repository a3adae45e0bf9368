"""The heartbeat: every connection is pinged; a peer that answers none for two
intervals is dropped, while peers that answer stay served."""

from __future__ import annotations

import asyncio
import time

from tests.factories import token
from tests.hub.conftest import StartServer
from tests.hub.wsclient import RawClient, WsClient

INTERVAL_S = 1


async def read_until_cut(client: RawClient, timeout: float) -> float:
    """Read raw bytes (never answering the pings in them) until the server cuts us."""
    loop = asyncio.get_running_loop()
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            data = await asyncio.wait_for(loop.sock_recv(client.sock, 65536), timeout)
        except ConnectionResetError:
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start
    raise AssertionError("the silent peer was never dropped")


async def test_a_peer_that_never_answers_pings_is_dropped(start_server: StartServer) -> None:
    server = start_server(websocket={"ping_interval_s": INTERVAL_S})
    silent = await RawClient(server.port, token("silent")).open()
    try:
        async with await WsClient.open(server.url, token("alive")) as alive:
            waited = await read_until_cut(silent, timeout=10 * INTERVAL_S)
            assert waited >= INTERVAL_S  # not cut before it could have answered
            await alive.barrier()  # the peer that answers every ping is still served
            assert not alive.done
    finally:
        silent.sock.close()
