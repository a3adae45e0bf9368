"""One WebSocket connection on /v1/ws.

uvicorn hands the socket over after the HTTP upgrade (`ws=HubConnection`); we
speak WebSocket with the sans-I/O `websockets.server.ServerProtocol` and write
pre-built frames straight to the transport. No task or queue per connection:
memory per idle connection stays a few KiB. Upgrades to any other path are
handed to uvicorn's own WebSocket implementation (and so to Starlette).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Subprotocol

try:  # websockets' C unmasking, as its own parser uses it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without its extension
    from websockets.utils import apply_mask

from gifting_server import access_log, metrics
from gifting_server.auth import TOKEN_EXPIRED, Identity, TokenExpired, verify_token
from gifting_server.errors import CloseCode, GiftingError
from gifting_server.protocol import SUBPROTOCOLS, Encoding, encode, websocket_frame

log = logging.getLogger("gifting_server.ws")
# websockets logs every open and close at INFO: too chatty for thousands of viewers.
protocol_log = logging.getLogger("gifting_server.ws.protocol")
protocol_log.setLevel(logging.WARNING)

HUB_PATH = b"/v1/ws"
CLOSE_GRACE_S = 5.0
DATA_OPCODES = (Opcode.TEXT, Opcode.BINARY, Opcode.CONT)
# RFC 6455 asks a client for a key, any key: with this one the payload is as sent.
ZERO_MASK = b"\x00\x00\x00\x00"


class Session(Protocol):
    """What a connection calls on the session serving its client (`api/ws.py`)."""

    identity: Identity

    def on_message(self, data: bytes) -> None: ...

    def allow_frame(self) -> bool:
        """Whether a ping frame is within the client's rate (else the session answered)."""
        ...

    def close(self) -> None:
        """The connection is going: leave every stream, stop what is in flight."""
        ...


# How the app opens a session for an authenticated connection: app_state["open_session"].
OpenSession = Callable[["HubConnection", Identity], Session]


class HubConnection(asyncio.Protocol):
    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any]) -> None:
        self.config, self.server_state, self.app_state = config, server_state, app_state
        # Kept: on Python 3.11 each asyncio.get_running_loop() is a getpid() system call,
        # and every data frame reads the loop's clock.
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.ws: ServerProtocol | None = None
        self.session: Session | None = None
        self.encoding = Encoding.JSON
        self.outbox: deque[bytes] = deque()
        self.outbox_bytes = 0
        self.paused = False
        self.send: Callable[[bytes], None] = _discard  # see _choose_send
        self._closed = False
        self.closing = False
        self.draining = False  # half-closed: what the peer still sends is dropped
        self.last_pong = 0.0
        self.awaiting_pong = False  # our heartbeat ping is out: its pong costs no token
        # a message in fragments so far (RFC 6455 section 5.4), and its opcode; the
        # protocol bounds the whole to max_message_bytes (CloseCode.MESSAGE_TOO_BIG)
        self.fragments: bytearray | None = None
        self.fragments_opcode = Opcode.TEXT
        self.fragments_dropped = False  # over the rate: the rest of this message is dropped
        # The protocol's parser is known to stand at a frame boundary only until it is
        # given a frame's bytes: a read it consumes may end anywhere in a frame, with
        # nothing left in its buffer (it takes a header before it waits for the rest).
        # So `_read_messages` reads frames only while the parser never had one.
        self.parser_untouched = False
        self.expires_at: float | None = None  # when the token stops counting
        self.expiry: asyncio.TimerHandle | None = None
        # for the access line at close: set when the upgrade is accepted
        self.opened_at: float | None = None
        self.path = ""
        self.request_id = ""
        self.user_id: str | None = None

    @property
    def closed(self) -> bool:
        return self._closed or self.closing

    # -- asyncio.Protocol ------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        self._choose_send()
        self.server_state.connections.add(self)

    def data_received(self, data: bytes) -> None:
        if self.draining:
            return
        if self.ws is None:
            hub = self.app_state.get("hub")
            if hub is None or not _is_hub_request(data):
                self._hand_over(data)
                return
            self.ws = _HubProtocol(
                subprotocols=[Subprotocol(s) for s in SUBPROTOCOLS],
                select_subprotocol=_select_subprotocol,
                max_size=hub.settings.websocket.max_message_bytes,
                logger=protocol_log,
            )
        elif self._at_message_boundary():
            read = self._read_messages(data)
            if read == len(data):
                return
            data = data[read:]
        handshake = self.ws.state is State.CONNECTING
        self.parser_untouched = False
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, Request):
                self._handshake(event)
            elif isinstance(event, Frame):
                self._on_frame(event)
        if handshake:
            # Bytes a client sent right behind its request would be frames the parser
            # has (uvicorn drops them today: it hands over the request head alone).
            self.parser_untouched = not self.ws.reader.buffer
        self._flush_protocol()

    def eof_received(self) -> bool | None:
        if self.ws is not None:
            self.ws.receive_eof()
            self._flush_protocol()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.opened_at is not None and self.ws is not None:
            close = self.ws.close_sent or self.ws.close_rcvd
            access_log.ws_line(
                self.path,
                close.code if close else None,
                self.opened_at,
                self.request_id,
                self.user_id,
            )
            self.opened_at = None
        self._closed = True
        self.server_state.connections.discard(self)
        self._choose_send()
        self.outbox.clear()
        if self.expiry is not None:
            self.expiry.cancel()
        if self.session is not None:
            self.session.close()
            self.app_state["hub"].connections.discard(self)
            self.session = None
            metrics.CONNECTIONS.dec()

    def pause_writing(self) -> None:
        self.paused = True
        self._choose_send()

    def resume_writing(self) -> None:
        self.paused = False
        while self.outbox and not self.paused and self.transport:
            frame = self.outbox.popleft()
            self.outbox_bytes -= len(frame)
            self.transport.write(frame)
        self._choose_send()

    def _choose_send(self) -> None:
        """How the hub and the session write a frame, from the connection's state:
        straight to the socket while it keeps up, into the bounded outbox while it is
        paused, nowhere once a close has begun. One bound function, so that fan-out's
        loop over thousands of connections checks nothing per connection."""
        if self._closed or self.closing or self.draining or self.transport is None:
            self.send = _discard
        elif self.paused:
            self.send = self._queue
        else:
            self.send = self.transport.write

    def shutdown(self) -> None:
        """uvicorn is stopping: tell the client to come back."""
        self.close(
            CloseCode.SERVICE_RESTART, "server restarting; reconnect and resubscribe with since"
        )

    # -- the WebSocket ---------------------------------------------------------

    def _hand_over(self, data: bytes) -> None:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

        assert self.transport is not None
        self.server_state.connections.discard(self)
        other = WebSocketsSansIOProtocol(
            config=self.config, server_state=self.server_state, app_state=self.app_state
        )
        other.connection_made(self.transport)
        other.data_received(data)
        self.transport.set_protocol(other)

    def _handshake(self, request: Request) -> None:
        assert self.ws is not None
        hub = self.app_state["hub"]
        origin = request.headers.get("Origin")
        if origin and not _origin_allowed(origin, request.headers, hub.settings.websocket):
            metrics.DROPS.labels(reason="origin").inc()
            self.ws.send_response(self.ws.reject(403, "Origin not allowed\n"))
            self._flush_protocol()
            assert self.transport is not None
            self.transport.close()
            return
        response = self.ws.accept(request)
        given = request.headers.get("X-Request-Id")
        self.request_id = access_log.request_id(given.encode("latin-1") if given else None)
        response.headers["X-Request-Id"] = self.request_id
        self.ws.send_response(response)
        if response.status_code != 101:
            return
        # the query string stays out of the log: it may carry the token
        self.path = request.path.partition("?")[0]
        self.opened_at = time.perf_counter()
        self._limit_write_buffers(hub.settings.websocket.write_buffer_bytes)
        chosen = response.headers.get("Sec-WebSocket-Protocol")
        self.encoding = Encoding(chosen) if chosen else Encoding.JSON
        loop = self.loop
        self.last_pong = loop.time()
        try:
            identity = verify_token(hub.settings.secret, _token_of(request))
        except TokenExpired:
            metrics.DROPS.labels(reason="unauthorized").inc()
            self.close(CloseCode.UNAUTHORIZED, TOKEN_EXPIRED)
            return
        except GiftingError as e:
            metrics.DROPS.labels(reason="unauthorized").inc()
            self.close(CloseCode.UNAUTHORIZED, e.message)
            return
        self.user_id = identity.user_id
        open_session: OpenSession = self.app_state["open_session"]
        self.session = open_session(self, identity)
        if identity.expires_at is not None:
            self.expires_at = identity.expires_at
            self.expiry = loop.call_later(identity.expires_at - time.time(), self._token_expired)
        hub.connections.add(self)
        metrics.CONNECTIONS.inc()
        log.debug(
            "ws open user=%s role=%s encoding=%s",
            identity.user_id,
            identity.role,
            self.encoding.name,
        )

    def _limit_write_buffers(self, limit: int) -> None:
        """Bound what a peer that stops reading can hold before frames queue in the
        outbox: the kernel's send buffer (else autotuned up to tcp_wmem max, MiBs
        per connection) and the transport's buffer (pause_writing above `limit`)."""
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, limit)
        self.transport.set_write_buffer_limits(high=limit)

    def _token_expired(self) -> None:
        metrics.DROPS.labels(reason="token_expired").inc()
        self.close(CloseCode.UNAUTHORIZED, TOKEN_EXPIRED)

    def _on_frame(self, frame: Frame) -> None:
        if self.closed:
            return  # our close frame is out: nothing the peer sends counts any more
        if self.expires_at is not None and time.time() >= self.expires_at:
            # The timer may run late on a busy loop: no frame counts after the expiry.
            self._token_expired()
            return
        if frame.opcode is Opcode.PONG:
            # The answer to our heartbeat is free; unsolicited pongs are allowed (RFC
            # 6455 section 5.5.3), not for free.
            if self.awaiting_pong or (self.session is not None and self.session.allow_frame()):
                self.awaiting_pong = False
                self.last_pong = self.loop.time()
        elif frame.opcode is Opcode.PING:
            if self.session is not None and self.session.allow_frame():
                self.send(Frame(Opcode.PONG, frame.data).serialize(mask=False))
        elif frame.opcode in DATA_OPCODES and self.session is not None:
            self.last_pong = self.loop.time()
            if frame.opcode is Opcode.CONT and not self.session.allow_frame():
                # A flood of tiny fragments is a flood all the same. The message it
                # belongs to is dropped: what would follow has a hole in it.
                self.fragments_dropped = not frame.fin
                self.fragments = None
                return
            if self.fragments_dropped:
                self.fragments_dropped = not frame.fin
                return
            opcode, data = self._assemble(frame)
            if data is None:
                return  # more fragments to come
            if opcode is Opcode.TEXT and not _is_utf8(data):
                self._not_utf8()
                return
            self.session.on_message(data)

    def _not_utf8(self) -> None:
        self.close(CloseCode.INVALID_TEXT, "text frames must be UTF-8")  # RFC 6455 section 8.1

    def _at_message_boundary(self) -> bool:
        """Whether `data_received` may read whole messages itself (`_read_messages`):
        the connection is open, and the protocol's parser was never given a frame's
        bytes (`parser_untouched`), so that it would start on a new frame with the
        next byte.

        The parser's buffer is empty whenever `parser_untouched` holds (the flag is set
        only on an empty buffer, and cleared before every call that feeds the parser),
        so it is not looked at. A message in fragments may still be under way: the call
        that took the handshake also parses any frame sent behind the request, a first
        fragment among them, so `current_size` is."""
        ws = self.ws
        return (
            self.parser_untouched
            and ws is not None
            and self.session is not None
            and ws.state is State.OPEN
            and not self.closed
            and not self.draining
            and ws.current_size is None
        )

    def _read_messages(self, data: bytes) -> int:
        """Hand the session each whole message at the start of `data` that came in one
        frame (final, masked, no reserved bit, text or binary, within the size bound),
        and take the heartbeat's pongs; return where the rest begins, for the
        protocol's own parser (which from then on reads every frame: `parser_untouched`).

        Past its ceiling a worker reads every gift it refuses, and `websockets`' parser
        (a generator per frame, a Frame object, its checks) took about 7 µs of each
        refusal's 60-70 (docs/overload.md). This reads the one shape a client's message
        nearly always has, with the same checks, and leaves every other frame (pings,
        closes, fragments, a frame cut by the read, anything the protocol must refuse)
        to the parser, which starts on it as on any frame: it was given none before."""
        assert self.ws is not None and self.session is not None
        limit, session = self.ws.max_message_size, self.session
        end, at = len(data), 0
        while end - at >= 6:
            first, second = data[at], data[at + 1]
            if (first != 0x81 and first != 0x82 and first != 0x8A) or second < 0x80:
                break  # not final text, binary or pong, a reserved bit, or unmasked
            length = second & 0x7F
            if first == 0x8A and length > 125:
                break  # a control frame's bound (RFC 6455 section 5.5): the parser's
            if length < 126:
                start = at + 6
            elif length == 126 and end - at >= 8:
                length, start = (data[at + 2] << 8) | data[at + 3], at + 8
            else:
                break
            if (limit is not None and length > limit) or start + length > end:
                break  # the parser refuses it (1009), or waits for the rest
            mask = data[start - 4 : start]
            payload = data[start : start + length]
            if mask != ZERO_MASK:
                payload = apply_mask(payload, mask)
            at = start + length
            # what _on_frame does for a final text or binary frame, inline: this runs
            # for every message a worker past its ceiling refuses
            if self.expires_at is not None and time.time() >= self.expires_at:
                self._token_expired()
                break
            if first == 0x8A:  # the heartbeat's answer, as _on_frame takes it
                if self.awaiting_pong or session.allow_frame():
                    self.awaiting_pong = False
                    self.last_pong = self.loop.time()
            else:
                self.last_pong = self.loop.time()
                if first == 0x81 and not _is_utf8(payload):
                    self._not_utf8()
                    break
                session.on_message(payload)
            # A message can close the connection, and so can a pong over the rate
            # (after too many refusals in a row): the parser was not run. Closed,
            # the parser takes the rest, and _on_frame drops it.
            if self._closed or self.closing or self.draining:
                break
        return at

    def _assemble(self, frame: Frame) -> tuple[Opcode, bytes | None]:
        """The whole message once its last fragment arrived. The protocol has checked
        the order (TEXT or BINARY, then CONT frames; control frames may come between)
        and the total size."""
        if frame.opcode is not Opcode.CONT:
            if frame.fin:
                return frame.opcode, bytes(frame.data)
            self.fragments, self.fragments_opcode = bytearray(frame.data), frame.opcode
            return frame.opcode, None
        assert self.fragments is not None
        self.fragments += frame.data
        if not frame.fin:
            return self.fragments_opcode, None
        data, self.fragments = bytes(self.fragments), None
        return self.fragments_opcode, data

    def _flush_protocol(self) -> None:
        if self.ws is None or self.transport is None:
            return
        for chunk in self.ws.data_to_send():
            if chunk:
                self.transport.write(chunk)
            else:
                self._end_tcp()

    def _end_tcp(self) -> None:
        """The protocol asks us to close TCP. Half-close and drain instead of closing
        with unread bytes, whose reset could overtake our close frame (the client
        would see 1006 instead of, say, 1009); cut the socket if the peer lingers."""
        assert self.transport is not None
        if self.draining:
            return
        self.draining = True
        self._choose_send()  # nothing may follow the close frame
        if self.session is not None:
            self.session.close()  # a viewer who said goodbye no longer counts or receives
        if not self.transport.can_write_eof():
            self.transport.close()
            return
        self.transport.write_eof()
        self.loop.call_later(CLOSE_GRACE_S, self.transport.abort)

    # -- what the hub and the session call --------------------------------------

    def _queue(self, frame: bytes) -> None:
        limits = self.app_state["hub"].settings.websocket
        if (
            len(self.outbox) >= limits.outbox_frames
            or self.outbox_bytes + len(frame) > limits.outbox_bytes
        ):
            metrics.DROPS.labels(reason="slow").inc()
            self.close(CloseCode.TOO_SLOW, "too slow: reconnect and resubscribe with since")
            return
        self.outbox.append(frame)
        self.outbox_bytes += len(frame)

    def send_message(self, message: dict[str, Any]) -> None:
        self.send(websocket_frame(encode(message, self.encoding), self.encoding))

    def ping(self) -> bool:
        """Heartbeat: send a ping, or drop the peer when it answered none for too long."""
        if self.ws is None or self.closed or self.ws.state is not State.OPEN:
            return False  # a closing handshake is under way: no more pings
        limits = self.app_state["hub"].settings.websocket
        if self.loop.time() - self.last_pong > 2 * limits.ping_interval_s:
            metrics.DROPS.labels(reason="dead").inc()
            if self.transport:
                self.transport.abort()
            return False
        if not self.paused:
            self.ws.send_ping(b"")
            self.awaiting_pong = True
            self._flush_protocol()
        return True

    def close(self, code: CloseCode, reason: str) -> None:
        """Close with a code the client can act on. The queued frames are dropped so
        the close frame goes out next; the socket is cut if the peer never answers."""
        if self.closed or self.ws is None or self.transport is None:
            return
        self.closing = True
        self._choose_send()
        if self.expiry is not None:
            self.expiry.cancel()
        self.outbox.clear()
        self.outbox_bytes = 0
        if self.session is not None:
            self.session.close()
        with contextlib.suppress(Exception):
            self.ws.send_close(code, reason[:120])
        self._flush_protocol()
        transport = self.transport
        self.loop.call_later(CLOSE_GRACE_S, transport.abort)


class _HubProtocol(ServerProtocol):
    """websockets answers a ping itself, straight into what it has to send, which we
    would write whatever the peer reads: a ping flood from a peer that never reads
    grows our buffers without bound. Here pings are handed to the connection, which
    answers within the connection's rate and through its bounded outbox."""

    def recv_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.PING:
            self.events.append(frame)
            return
        super().recv_frame(frame)


def _discard(frame: bytes) -> None:
    pass


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode()
    except UnicodeDecodeError:
        return False
    return True


def _is_hub_request(head: bytes) -> bool:
    request_line = head.split(b"\r\n", 1)[0].split(b" ")
    return len(request_line) == 3 and request_line[1].split(b"?", 1)[0] == HUB_PATH


def _select_subprotocol(protocol: ServerProtocol, offered: Any) -> Subprotocol | None:
    for name in offered:
        if name in SUBPROTOCOLS:
            return Subprotocol(name)
    return None


def _token_of(request: Request) -> str:
    tokens = parse_qs(urlsplit(request.path).query).get("token")
    if tokens:
        return tokens[0]
    authorization = request.headers.get("Authorization", "")
    scheme, _, value = authorization.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _origin_allowed(origin: str, headers: Headers, limits: Any) -> bool:
    if origin in limits.allowed_origins:
        return True
    host = headers.get("Host", "")
    return urlsplit(origin).netloc == host


__all__ = ["HubConnection", "Identity"]
