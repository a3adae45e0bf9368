"""WebSocket clients for the hub tests: real sockets, no mocks.

`WsClient` wraps `websockets.asyncio.client.connect`: it encodes and decodes the
JSON or msgpack subprotocol and keeps reading in a background task, so a test
waits for what it expects with a timeout (`next_of`, `events_until`, `closed`)
and a client never stalls the server by not reading.

`RawClient` speaks WebSocket with websockets' sans-I/O `ClientProtocol` over a
plain socket with a tiny receive buffer, so a test decides when (if ever) it reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

JSON = "gifting.v1.json"
MSGPACK = "gifting.v1.msgpack"
TIMEOUT_S = 5.0

T = TypeVar("T")
Event = dict[str, Any]
Message = dict[str, Any]

_ids = itertools.count(1)


def ws_url(base_url: str, token: str | None = None) -> str:
    url = base_url.replace("http://", "ws://", 1) + "/v1/ws"
    return url if token is None else f"{url}?token={quote(token)}"


def message_id(prefix: str = "m") -> str:
    return f"{prefix}-{next(_ids)}"


def assert_no_traceback(payload: bytes | str) -> None:
    text = payload.decode(errors="replace") if isinstance(payload, bytes) else payload
    for marker in ("Traceback", 'File "', "Error(", "Exception", "site-packages"):
        assert marker not in text, f"server detail leaked into a frame: {text[:300]}"


class Closed(Exception):
    """The connection closed while a test was waiting for a message."""


class WsClient:
    def __init__(self, connection: ClientConnection, encoding: str) -> None:
        self.connection = connection
        self.encoding = encoding
        self.received: list[Message] = []  # every message, decoded, in arrival order
        self.payloads: list[bytes | str] = []  # every frame as it came
        self.unread: deque[Message] = deque()  # messages other than `events` not taken yet
        self.unread_events: deque[Event] = deque()  # events (flattened) not taken yet
        self.events: list[Event] = []  # every event received, in order
        self.close_code: int | None = None
        self.close_reason = ""
        self.done = False
        self._changed = asyncio.Condition()
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(
        cls,
        base_url: str,
        token: str | None = None,
        *,
        encoding: str = JSON,
        origin: str | None = None,
        headers: dict[str, str] | None = None,
        max_queue: int | None = 4096,
    ) -> WsClient:
        connection = await connect(
            ws_url(base_url, token),
            subprotocols=[Subprotocol(encoding)],
            origin=origin,  # type: ignore[arg-type]
            additional_headers=headers,
            compression=None,
            proxy=None,
            ping_interval=None,
            max_size=None,
            max_queue=max_queue,
            open_timeout=TIMEOUT_S,
            close_timeout=2,
        )
        assert connection.subprotocol == encoding
        return cls(connection, encoding)

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.connection.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    # -- sending ---------------------------------------------------------------

    def encode(self, message: Message) -> bytes | str:
        if self.encoding == JSON:
            return orjson.dumps(message).decode()
        packed: bytes = msgpack.packb(message, use_bin_type=True)
        return packed

    async def send(self, message: Message) -> None:
        await self.connection.send(self.encode(message))

    async def send_raw(self, data: bytes | str) -> None:
        await self.connection.send(data)

    async def subscribe(
        self, stream_id: str, since: int | None = None, timeout: float = TIMEOUT_S
    ) -> Message:
        message: Message = {"type": "subscribe", "stream_id": stream_id}
        if since is not None:
            message["since"] = since
        await self.send(message)
        return await self.next_of("subscribed", timeout, stream_id=stream_id)

    async def gift(
        self,
        stream_id: str,
        gift_id: str = "rose",
        count: int = 1,
        id: str | None = None,
        timeout: float = TIMEOUT_S,
    ) -> Message:
        """Send a `gift` and return its answer: the `ack` or the `error` with its id."""
        gift_message_id = id or message_id("gift")
        await self.send_gift(stream_id, gift_id, count, gift_message_id)
        return await self.answer_to(gift_message_id, timeout)

    async def send_gift(
        self, stream_id: str, gift_id: str = "rose", count: int = 1, id: str | None = None
    ) -> str:
        gift_message_id = id or message_id("gift")
        await self.send(
            {
                "type": "gift",
                "id": gift_message_id,
                "stream_id": stream_id,
                "gift_id": gift_id,
                "count": count,
            }
        )
        return gift_message_id

    async def answer_to(self, gift_message_id: str, timeout: float = TIMEOUT_S) -> Message:
        return await self._wait(
            lambda: self._take(
                lambda m: m["type"] in ("ack", "error") and m.get("id") == gift_message_id
            ),
            timeout,
        )

    async def barrier(self, timeout: float = TIMEOUT_S) -> None:
        """`ping` → `pong`: everything the server wrote before the pong has arrived."""
        await self.send({"type": "ping"})
        await self.next_of("pong", timeout)

    def viewers_shown(self, stream_id: str) -> int | None:
        """The viewer count a page shows: from `subscribed`, then each `viewers` event."""
        shown = None
        for message in self.received:
            if message.get("stream_id") != stream_id:
                continue
            if message["type"] == "subscribed":
                shown = message["viewers"]
            elif message["type"] == "events":
                for event in message["events"]:
                    if event["kind"] == "viewers":
                        shown = event["count"]
        return shown

    # -- waiting ---------------------------------------------------------------

    async def next_of(self, kind: str, timeout: float = TIMEOUT_S, **fields: Any) -> Message:
        """The first unread message of type `kind` (with these field values)."""
        return await self._wait(
            lambda: self._take(
                lambda m: m["type"] == kind and all(m.get(k) == v for k, v in fields.items())
            ),
            timeout,
        )

    async def events_until(
        self, predicate: Callable[[Event], bool], timeout: float = TIMEOUT_S
    ) -> list[Event]:
        """Unread events in order, up to and including the first that matches."""

        def check() -> list[Event] | None:
            for i, event in enumerate(self.unread_events):
                if predicate(event):
                    return [self.unread_events.popleft() for _ in range(i + 1)]
            return None

        return await self._wait(check, timeout)

    async def closed(self, timeout: float = TIMEOUT_S) -> tuple[int | None, str]:
        """Wait for the server to close the connection: (close code, reason)."""

        async def wait() -> None:
            async with self._changed:
                await self._changed.wait_for(lambda: self.done)

        await asyncio.wait_for(wait(), timeout)
        return self.close_code, self.close_reason

    def _take(self, predicate: Callable[[Message], bool]) -> Message | None:
        for message in self.unread:
            if predicate(message):
                self.unread.remove(message)
                return message
        return None

    async def _wait(self, check: Callable[[], T | None], timeout: float) -> T:
        async def wait() -> T:
            async with self._changed:
                while True:
                    result = check()
                    if result is not None:
                        return result
                    if self.done:
                        raise Closed(f"closed with {self.close_code} {self.close_reason!r}")
                    await self._changed.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def _read(self) -> None:
        try:
            async for payload in self.connection:
                message = self.decode(payload)
                async with self._changed:
                    self.payloads.append(payload)
                    self.received.append(message)
                    if message.get("type") == "events":
                        self.events.extend(message["events"])
                        self.unread_events.extend(message["events"])
                    else:
                        self.unread.append(message)
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            async with self._changed:
                self.close_code = self.connection.close_code
                self.close_reason = self.connection.close_reason or ""
                self.done = True
                self._changed.notify_all()

    def decode(self, payload: bytes | str) -> Message:
        if isinstance(payload, str):
            assert self.encoding == JSON, "a text frame on a msgpack connection"
            decoded = orjson.loads(payload)
        else:
            assert self.encoding == MSGPACK, "a binary frame on a JSON connection"
            decoded = msgpack.unpackb(payload, raw=False)
        assert isinstance(decoded, dict) and "type" in decoded, decoded
        return decoded

    def assert_no_traceback(self) -> None:
        for payload in self.payloads:
            assert_no_traceback(payload)
        assert_no_traceback(self.close_reason)


class RawClient:
    """A WebSocket client over a plain non-blocking socket that reads only when told.

    A small SO_RCVBUF, set before connecting, keeps the TCP window small, so a
    client that stops reading backs up into the server quickly.
    """

    def __init__(self, port: int, token: str, *, rcvbuf: int = 4096, encoding: str = JSON) -> None:
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setblocking(False)
        uri = parse_uri(f"ws://127.0.0.1:{port}/v1/ws?token={quote(token)}")
        self.protocol = ClientProtocol(uri, subprotocols=[Subprotocol(encoding)], max_size=None)
        self.messages: list[Message] = []
        self.pongs: list[bytes] = []  # payloads of the pong frames received
        self.pending: deque[Any] = deque()  # events read but not taken yet
        self.bytes_read = 0
        self.close: Close | None = None

    async def open(self) -> RawClient:
        await self.loop.sock_connect(self.sock, ("127.0.0.1", self.port))
        self.protocol.send_request(self.protocol.connect())
        await self._flush()
        while True:
            for event in await self._read_events():
                if isinstance(event, Response):
                    assert event.status_code == 101, event.status_code
                    return self
                raise AssertionError(f"unexpected {event!r} before the handshake answer")

    async def send(self, message: Message) -> None:
        self.protocol.send_text(orjson.dumps(message))
        await self._flush()

    async def send_frames(self, *frames: tuple[Opcode, bytes, bool]) -> None:
        """Send (opcode, payload, fin) frames as given, in one write: fragments of a
        message (TEXT or BINARY, then CONT), pings between them, floods."""
        for opcode, data, fin in frames:
            if opcode is Opcode.TEXT:
                self.protocol.send_text(data, fin)
            elif opcode is Opcode.BINARY:
                self.protocol.send_binary(data, fin)
            elif opcode is Opcode.CONT:
                self.protocol.send_continuation(data, fin)
            elif opcode is Opcode.PONG:
                assert fin, "only data frames are fragmented"
                self.protocol.send_pong(data)
            else:
                assert opcode is Opcode.PING and fin, "only data frames are fragmented"
                self.protocol.send_ping(data)
        await self.loop.sock_sendall(self.sock, b"".join(self.protocol.data_to_send()))

    async def next_message(self, timeout: float = TIMEOUT_S) -> Message:
        """Read until one whole message arrived (only used before the client stalls);
        the server's heartbeat pings are passed over, and frames that came in the
        same read wait for the next call."""

        async def read() -> Message:
            while True:
                while self.pending:
                    event = self.pending.popleft()
                    if isinstance(event, Frame) and event.opcode is Opcode.PING:
                        continue
                    if isinstance(event, Frame) and event.opcode is Opcode.PONG:
                        self.pongs.append(bytes(event.data))
                        continue
                    if isinstance(event, Frame) and event.opcode is Opcode.PING:
                        continue  # the server's heartbeat
                    if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        message: Message = orjson.loads(event.data)
                    elif isinstance(event, Frame) and event.opcode is Opcode.BINARY:
                        message = msgpack.unpackb(event.data, raw=False)
                    else:
                        raise AssertionError(f"unexpected {event!r}")
                    self.messages.append(message)
                    return message
                self.pending.extend(await self._read_events())

        return await asyncio.wait_for(read(), timeout)

    async def read_until_close(self, timeout: float = TIMEOUT_S) -> Close:
        """Read everything the server sent until its close frame; return that close."""

        async def read() -> Close:
            while True:
                while self.pending:
                    event = self.pending.popleft()
                    assert isinstance(event, Frame), event
                    if event.opcode is Opcode.TEXT:
                        self.messages.append(orjson.loads(event.data))
                    elif event.opcode is Opcode.CLOSE:
                        assert_no_traceback(bytes(event.data))
                        self.close = Close.parse(bytes(event.data))
                        return self.close
                self.pending.extend(await self._read_events())

        return await asyncio.wait_for(read(), timeout)

    async def read_frames(self) -> list[Frame]:
        """The frames of one read from the socket, whatever they are."""
        events = [*self.pending, *await self._read_events()]
        self.pending.clear()
        return [event for event in events if isinstance(event, Frame)]

    def shutdown(self) -> None:
        self.sock.close()

    async def _read_events(self) -> list[Any]:
        data = await self.loop.sock_recv(self.sock, 1 << 16)
        if not data:
            self.protocol.receive_eof()
            raise Closed("the server closed the TCP connection without a close frame")
        self.bytes_read += len(data)
        self.protocol.receive_data(data)
        return list(self.protocol.events_received())

    async def _flush(self) -> None:
        for chunk in self.protocol.data_to_send():
            if chunk:
                await self.loop.sock_sendall(self.sock, chunk)
