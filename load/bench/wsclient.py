"""A minimal WebSocket viewer for benchmarks: asyncio protocol on uvloop that does
the handshake, subscribes, then only finds frame boundaries and counts events.
It never decodes a payload, so the client costs far less than the server."""

from __future__ import annotations

import asyncio
import base64
import os
import time

import orjson


class Viewer(asyncio.Protocol):
    def __init__(self, path: str, host: str, stream_id: str, stats: ViewerStats) -> None:
        self.request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: gifting.v1.json\r\n\r\n"
        ).encode()
        self.subscribe = masked_text(orjson.dumps({"type": "subscribe", "stream_id": stream_id}))
        self.stats = stats
        self.buffer = bytearray()
        self.handshaken = False
        self.ready = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.handshaken:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(bytes(self.buffer[:80]).decode()))
                return
            del self.buffer[: end + 4]
            self.handshaken = True
            assert self.transport is not None
            self.transport.write(self.subscribe)
        self._frames()

    def _frames(self) -> None:
        buffer, stats = self.buffer, self.stats
        offset = 0
        while len(buffer) - offset >= 2:
            length = buffer[offset + 1] & 0x7F
            header = 2
            if length == 126:
                if len(buffer) - offset < 4:
                    break
                length, header = int.from_bytes(buffer[offset + 2 : offset + 4], "big"), 4
            elif length == 127:
                if len(buffer) - offset < 10:
                    break
                length, header = int.from_bytes(buffer[offset + 2 : offset + 10], "big"), 10
            end = offset + header + length
            if end > len(buffer):
                break
            payload = bytes(buffer[offset + header : end])
            stats.frames += 1
            if payload.startswith(b'{"type":"events"'):
                stats.on_events(payload)
            elif payload.startswith(b'{"type":"subscribed"') and not self.ready.done():
                self.ready.set_result(None)
            offset = end
        del buffer[:offset]

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before subscribed"))


def masked_text(payload: bytes) -> bytes:
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


class ViewerStats:
    def __init__(self, sample_every: int = 50) -> None:
        self.frames = 0
        self.events = 0
        self.gift_events = 0
        self.closed = 0
        self.latencies_ms: list[float] = []
        self.sample_every = sample_every
        self._n = 0

    def on_events(self, payload: bytes) -> None:
        self.events += payload.count(b'"event_id":')
        self.gift_events += payload.count(b'"kind":"gift"')
        self._n += 1
        if self._n % self.sample_every == 0:  # latency of the frame's first event, sampled
            start = payload.find(b'"ts":')
            if start > 0:
                ts = int(payload[start + 5 : payload.find(b",", start)])
                self.latencies_ms.append(time.time() * 1000 - ts)
