"""A minimal WebSocket viewer for benchmarks: a raw socket on the event loop that
does the handshake, subscribes, then only finds frame boundaries and counts events.
It counts the events of a frame with `events.count_in` and decodes only every
fiftieth frame (for latency), so the client costs far less than the server.

Latency is taken from the kernel's receive timestamp of the bytes (SO_TIMESTAMPNS),
not from when this process got round to reading them: with thousands of viewers
on one core, the client's own queue would otherwise be counted as the server's.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time

import orjson

from gifting_server import events
from load.bench.frames import client_frame, next_frame, upgrade_request

EVENTS = b'{"type":"events"'
SUBSCRIBED = b'{"type":"subscribed"'
READ_BYTES = 65536
SO_TIMESTAMPNS = 35  # Linux; the socket module does not name it
ANCILLARY_BYTES = socket.CMSG_SPACE(16)  # one struct timespec


class Viewer:
    def __init__(self, path: str, host: str, stream_id: str, stats: ViewerStats) -> None:
        self.request = upgrade_request(path, host)
        self.subscribe = client_frame(orjson.dumps({"type": "subscribe", "stream_id": stream_id}))
        self.stats = stats
        self.sock = socket.socket()
        self.partial = b""  # the start of a frame that ended a read
        self.handshaken = False
        self.ready = asyncio.get_running_loop().create_future()

    async def connect(self, address: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        await loop.sock_connect(self.sock, address)
        await loop.sock_sendall(self.sock, self.request)
        loop.add_reader(self.sock.fileno(), self._readable)

    def _readable(self) -> None:
        try:
            data, ancillary, _, _ = self.sock.recvmsg(READ_BYTES, ANCILLARY_BYTES)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._lost()
            return
        # The stamp of the newest packet read: for older frames in the same read it
        # is a little late, never early.
        received_ms = time.time() * 1000
        for level, kind, stamp in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", stamp)
                received_ms = seconds * 1e3 + nanoseconds / 1e6
        if self.partial:
            data = self.partial + data
        if not self.handshaken:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.partial = data
                return
            if not data.startswith(b"HTTP/1.1 101"):
                self.ready.set_exception(RuntimeError(data[:80].decode()))
                self._lost()
                return
            data = data[end + 4 :]
            self.handshaken = True
            self.sock.send(self.subscribe)
        self.partial = data[self._frames(data, received_ms) :]

    def _frames(self, data: bytes, received_ms: float) -> int:
        """Count the complete frames in `data`; return where the incomplete one starts."""
        stats, offset = self.stats, 0
        while (frame := next_frame(data, offset)) is not None:
            _, start, end = frame
            stats.frames += 1
            if data.startswith(EVENTS, start):
                stats.on_events(data, start, end, received_ms)
            elif data.startswith(SUBSCRIBED, start) and not self.ready.done():
                self.ready.set_result(None)
            offset = end
        return offset

    def _lost(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        self.stats.closed += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed before subscribed"))


class ViewerStats:
    def __init__(self, sample_every: int = 50) -> None:
        self.frames = 0
        self.events = 0
        self.closed = 0
        self.latencies_ms: list[float] = []
        self.received_ms: list[tuple[int, float]] = []  # (event id, received) per sample
        self.sample_every = sample_every
        self._n = 0

    def on_events(self, data: bytes, start: int, end: int, received_ms: float) -> None:
        count = events.count_in(data, start, end)
        self.events += count
        self._n += 1
        if self._n % self.sample_every == 0:  # latency of the frame's first event, sampled
            frame = orjson.loads(data[start:end])["events"]
            if len(frame) != count:
                raise RuntimeError(f"counted {count} events in a frame of {len(frame)}")
            first = events.checked(frame[0])
            self.latencies_ms.append(received_ms - first["ts"])
            self.received_ms.append((first["event_id"], received_ms))
