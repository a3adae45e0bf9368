"""Slowloris: connections that never finish their request (an HTTP request's head or
body, the /v1/ws upgrade's head) are cut after `[http] request_read_timeout_s`, and
a worker holds at most `[http] max_pending_connections` of them, so they cannot
starve real clients."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator
from urllib.parse import quote

import httpx

from gifting_server.api.http_protocol import MAX_HEAD_BYTES
from tests.factories import token
from tests.faults.conftest import Serve
from tests.hub.wsclient import WsClient

READ_TIMEOUT_S = 1.0
SLACK_S = 2.0


def partial_requests() -> list[bytes]:
    upgrade = (
        f"GET /v1/ws?token={quote(token('ann'))} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
    ).encode()
    return [
        upgrade,  # all but the blank line that ends the head
        upgrade[:20],
        b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        b"POST /v1/streams HTTP/1.1\r\nContent-Type: application/json\r\n",
        # half a body, to a route that reads it all before it answers
        b"POST /v1/payments/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{",
        b"",  # connects and sends nothing
    ]


class Slow:
    """A raw client that sends what it is given and then waits."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()

    @classmethod
    async def connect(cls, port: int, sent: bytes = b"", send_buffer: int | None = None) -> Slow:
        """`send_buffer`: the socket's send buffer, fixed (the kernel's autotuning off)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if send_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        slow = cls(sock)
        await slow.send(sent)
        return slow

    async def send(self, data: bytes) -> None:
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def read_until(self, end: bytes, timeout: float = SLACK_S) -> bytes:
        received = b""
        async with asyncio.timeout(timeout):
            while not received.endswith(end):
                data = await self.loop.sock_recv(self.sock, 1)
                assert data, f"closed after {received!r}"
                received += data
        return received

    async def cut(self, timeout: float) -> bytes:
        """Wait until the server closes the connection; everything it sent before."""
        received = b""

        async def read() -> bytes:
            nonlocal received
            while True:
                try:
                    data = await self.loop.sock_recv(self.sock, 65536)
                except ConnectionResetError:
                    return received
                if not data:
                    return received
                received += data

        return await asyncio.wait_for(read(), timeout)

    def close(self) -> None:
        self.sock.close()


async def test_half_sent_requests_are_cut_after_the_read_timeout(
    redis_url: str, serve: Serve
) -> None:
    server = serve(redis_url, http={"request_read_timeout_s": READ_TIMEOUT_S})
    started = time.monotonic()
    slow = [await Slow.connect(server.port, sent) for sent in partial_requests() * 4]
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            # meanwhile whoever sends a whole request is served
            assert (await http.get("/healthz")).status_code == 200
            async with await WsClient.open(server.url, token("bob")) as client:
                await client.barrier()
                answers = await asyncio.gather(
                    *(s.cut(timeout=READ_TIMEOUT_S + SLACK_S) for s in slow)
                )
                assert time.monotonic() - started >= READ_TIMEOUT_S * 0.9
                assert all(b"101 Switching" not in a for a in answers), answers
                await client.barrier()  # an open WebSocket is no pending request
            assert (await http.get("/healthz")).status_code == 200
    finally:
        for s in slow:
            s.close()


async def test_a_head_trickled_a_byte_at_a_time_is_cut_all_the_same(
    redis_url: str, serve: Serve
) -> None:
    """Neither bytes that keep coming nor a first request answered earlier on the
    same connection (keep-alive) reset the deadline of a head."""
    server = serve(redis_url, http={"request_read_timeout_s": READ_TIMEOUT_S})
    kept_alive = await Slow.connect(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    trickled = await Slow.connect(server.port, b"GET /healthz HTTP/1.1\r\n")
    try:
        answer = await kept_alive.loop.sock_recv(kept_alive.sock, 65536)
        assert answer.startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        await kept_alive.send(b"GET /healthz HTTP/1.1\r\n")
        for slow in (trickled, kept_alive):
            cut = False
            while not cut:
                assert time.monotonic() - started < READ_TIMEOUT_S + SLACK_S, "never cut"
                with contextlib.suppress(ConnectionError):
                    await slow.send(b"X-Slow: 1\r\n")
                try:
                    await slow.cut(timeout=0.2)  # the server cut us, or: send the next byte
                    cut = True
                except TimeoutError:
                    pass
        assert time.monotonic() - started >= READ_TIMEOUT_S * 0.9
    finally:
        kept_alive.close()
        trickled.close()


async def test_beyond_max_pending_connections_the_oldest_half_sent_requests_are_cut(
    redis_url: str, serve: Serve
) -> None:
    limit = 5
    server = serve(
        redis_url, http={"request_read_timeout_s": 60.0, "max_pending_connections": limit}
    )
    sent = partial_requests() * 4
    slow = [await Slow.connect(server.port, request) for request in sent]
    try:
        results = await asyncio.gather(
            *(s.cut(timeout=SLACK_S) for s in slow), return_exceptions=True
        )
        cut = [r for r in results if not isinstance(r, BaseException)]
        assert len(cut) >= len(sent) - limit, results
        # Real clients get through, whoever holds the pending slots.
        async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
            assert (await http.get("/healthz")).status_code == 200
        async with await WsClient.open(server.url, token("bob")) as client:
            await client.barrier()
    finally:
        for s in slow:
            s.close()


async def test_a_body_sent_after_an_early_answer_leaves_no_idle_connection_unbounded(
    redis_url: str, serve: Serve
) -> None:
    """A route may answer before it read the body (a refused token, /healthz): the
    body that follows must not leave a kept-alive connection with no deadline."""
    server = serve(redis_url, http={"request_read_timeout_s": READ_TIMEOUT_S})
    heads = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
        b"POST /v1/streams/demo/gifts HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n",
        b"POST /v1/streams HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
    ]
    bodies = [b"hello", b"hello", b"5\r\nhello\r\n0\r\n\r\n"]
    slow = [await Slow.connect(server.port, head) for head in heads]
    try:
        for s in slow:
            answer = await s.loop.sock_recv(s.sock, 65536)
            assert answer.startswith((b"HTTP/1.1 200", b"HTTP/1.1 401")), answer
        started = time.monotonic()
        for s, body in zip(slow, bodies, strict=True):
            await s.send(body)  # the request is complete now; the connection is idle
        await asyncio.gather(*(s.cut(timeout=READ_TIMEOUT_S + SLACK_S) for s in slow))
        assert time.monotonic() - started < READ_TIMEOUT_S + SLACK_S
    finally:
        for s in slow:
            s.close()


async def test_a_websocket_upgraded_on_a_kept_alive_connection_is_not_cut(
    redis_url: str, serve: Serve
) -> None:
    server = serve(redis_url, http={"request_read_timeout_s": READ_TIMEOUT_S})
    upgrade = (
        f"GET /v1/ws?token={quote(token('ann'))} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ).encode()
    client = await Slow.connect(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    try:
        assert (await client.read_until(b'{"status":"ok"}')).startswith(b"HTTP/1.1 200")
        await client.send(upgrade)
        assert (await client.read_until(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        # Past the read deadline the WebSocket still answers a ping (masked, empty).
        await asyncio.sleep(READ_TIMEOUT_S + 0.5)
        await client.send(b"\x89\x80\x00\x00\x00\x00")
        await client.read_until(b"\x8a\x00")  # its pong (after any heartbeat ping)
    finally:
        client.close()


async def test_a_request_head_without_end_is_refused_with_431_before_it_fills_memory(
    redis_url: str, serve: Serve
) -> None:
    """The read deadline bounds a head's time, not its size: in those seconds one
    connection could send hundreds of MiB of request line or header, which the
    parser buffers (and copies, over and over). Past MAX_HEAD_BYTES it gets 431; so
    does a chunked body's trailer, but never a body, however small its chunks."""
    server = serve(redis_url, http={"request_read_timeout_s": 60.0})
    starts = [
        b"GET /",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ",
        # a chunked body's trailer: headers after the last chunk
        b"POST /v1/payments/webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
        b"\r\n1\r\n{\r\n0\r\nX-Trailer: ",
    ]
    for start in starts:
        # What the client sent is what the server read only if the kernel cannot hold
        # it: a send buffer left to autotune grows to tcp_wmem's maximum (4 MiB here,
        # the bound below), which a server slow to be scheduled lets the client fill.
        client = await Slow.connect(server.port, start, send_buffer=MAX_HEAD_BYTES)
        try:
            sent = 0
            with contextlib.suppress(ConnectionError):
                while sent < 64 * MAX_HEAD_BYTES:
                    await client.send(b"a" * 65536)
                    sent += 65536
            answer = await client.cut(timeout=SLACK_S)
            assert answer.startswith(b"HTTP/1.1 431"), answer[:100]
            assert sent < 64 * MAX_HEAD_BYTES
        finally:
            client.close()
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        big_but_fine = {"X-Fine": "f" * (MAX_HEAD_BYTES // 2)}
        assert (await http.get("/healthz", headers=big_but_fine)).status_code == 200

        async def in_chunks() -> AsyncIterator[bytes]:  # a 16 KiB body in 1-byte chunks
            for byte in b"{" + b" " * (16 * 1024 - 2) + b"}":
                yield bytes([byte])

        chunked = await http.post("/v1/payments/webhook", content=in_chunks())
        assert chunked.status_code == 401, chunked.text  # read whole, then refused
        assert chunked.json()["error"]["code"] == "invalid_signature"
