"""A minimal WebSocket gifter for benchmarks: a raw protocol on the event loop that
does the handshake, writes gift frames and hands each answer's payload back.

The `websockets` client spends ~200 µs of CPU per gift here (a send and an ack),
enough to make the client, not the server, the limit at 2,000 gifts/s; this costs
a small fraction of it. Frames are masked with a zero key, which RFC 6455 allows
(the key only has to be sent) and which leaves the payload as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from load.bench.frames import PING, PONG, TEXT, client_frame, next_frame, upgrade_request


class Gifter(asyncio.Protocol):
    def __init__(self, path: str, host: str, on_answer: Callable[[bytes], None]) -> None:
        self.request = upgrade_request(path, host)
        self.on_answer = on_answer
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.open: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.transport.write(self.request)  # type: ignore[union-attr]

    def send(self, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.write(client_frame(payload))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data
        if not self.open.done():
            head, found, buffer = buffer.partition(b"\r\n\r\n")
            if not found:
                self.buffer = head
                return
            if not head.startswith(b"HTTP/1.1 101"):
                self.open.set_exception(ConnectionError(head.split(b"\r\n", 1)[0].decode()))
                return
            self.open.set_result(None)
        self.buffer = self._frames(buffer)

    def _frames(self, buffer: bytes) -> bytes:
        """Hand over every whole frame; what is left is the start of the next one."""
        at = 0
        while (frame := next_frame(buffer, at)) is not None:
            opcode, start, at = frame
            if opcode == TEXT:
                self.on_answer(buffer[start:at])
            elif opcode == PING and self.transport is not None:  # the server's heartbeat
                self.transport.write(client_frame(buffer[start:at], PONG))
        return buffer[at:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed during the handshake"))


async def open_gifters(
    port: int, tokens: list[str], on_answer: Callable[[bytes], None]
) -> list[Gifter]:
    loop = asyncio.get_running_loop()
    gifters: list[Gifter] = []
    for start in range(0, len(tokens), 100):
        batch = [
            Gifter(f"/v1/ws?token={token}", f"127.0.0.1:{port}", on_answer)
            for token in tokens[start : start + 100]
        ]
        for gifter in batch:
            await loop.create_connection(lambda g=gifter: g, "127.0.0.1", port)  # type: ignore[misc]
        await asyncio.gather(*(g.open for g in batch))
        gifters += batch
    return gifters
