"""uvicorn's HTTP protocol (httptools) with a deadline for reading every request.

uvicorn waits for ever for a request that never ends (slowloris): connections that
send `GET /v1/ws?token=… HTTP/1.1\\r\\nHost: …\\r\\n` and then nothing, or a header
line now and then, or half a body, are held for ever. Here a connection must have
sent a whole request (head and body; for a /v1/ws upgrade, its head) within
`[http] request_read_timeout_s` of connecting, of the request's first byte, or of
its previous response on a kept-alive connection, whatever it trickles meanwhile.
A worker keeps at most `[http] max_pending_connections` connections in that state:
beyond that the oldest is closed (a real client sends its request at once, so it is
never the oldest). Once an upgrade's head is in, `HubConnection` takes the socket
and checks the token at once.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gifting_server.config import Http

# A request line and headers together (a token in the URL is ~300 bytes). Beyond it:
# 431 and the connection closed, before the parser buffers any more of it.
MAX_HEAD_BYTES = 64 * 1024


class PendingRequests:
    """The connections of one server whose request is not all in, oldest first,
    each with the timer that closes it when its time is up."""

    def __init__(self, limits: Http) -> None:
        self.limits = limits
        self.deadlines: dict[HttpProtocol, asyncio.TimerHandle] = {}

    def wait(self, connection: HttpProtocol) -> None:
        """Start the connection's deadline, unless it runs already: bytes that keep
        coming do not buy time."""
        if connection in self.deadlines:
            return
        while len(self.deadlines) >= self.limits.max_pending_connections:
            next(iter(self.deadlines)).cut()
        self.deadlines[connection] = asyncio.get_running_loop().call_later(
            self.limits.request_read_timeout_s, connection.cut
        )

    def done(self, connection: HttpProtocol) -> None:
        deadline = self.deadlines.pop(connection, None)
        if deadline is not None:
            deadline.cancel()


class HttpProtocol(HttpToolsProtocol):
    """Serve it as uvicorn's `http` (with `ws=HubConnection`); the app's lifespan
    state holds the server's `PendingRequests` under "pending_requests"."""

    pending: PendingRequests | None = None
    in_head = True  # between requests or inside a request's head
    head_bytes = 0  # bytes read since then (at most one read short)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.pending = self.app_state.get("pending_requests")
        if self.pending is not None:
            self.pending.wait(self)

    def data_received(self, data: bytes) -> None:
        if self.in_head:
            self.head_bytes += len(data)
        super().data_received(data)
        if self.in_head and self.head_bytes > MAX_HEAD_BYTES and not self.transport.is_closing():
            self.refuse_head()

    def refuse_head(self) -> None:
        message = b"request line and headers over %d bytes" % MAX_HEAD_BYTES
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(message), message)
        )
        self.cut()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending is not None:
            self.pending.done(self)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.pending is not None:
            self.pending.wait(self)  # a pipelined request, while the one before runs

    def on_headers_complete(self) -> None:
        self.in_head, self.head_bytes = False, 0
        if self.pending is not None and self.parser.should_upgrade() and self._should_upgrade():
            self.pending.done(self)  # the WebSocket's own limits take over
        super().on_headers_complete()

    def on_chunk_header(self) -> None:
        # Counted like a head until data comes: a chunked body's trailer (headers
        # after its last, empty chunk) is buffered by the parser just the same.
        self.in_head, self.head_bytes = True, 0

    def on_body(self, body: bytes) -> None:
        self.in_head, self.head_bytes = False, 0
        super().on_body(body)

    def on_chunk_complete(self) -> None:
        self.in_head, self.head_bytes = False, 0

    def on_message_complete(self) -> None:
        self.in_head, self.head_bytes = True, 0
        if self.pending is not None:
            self.pending.done(self)
            if self._answered_early():
                # Answered before its body was all in (a refused token, a route that
                # reads no body): the connection is idle now, and uvicorn's keep-alive
                # timer was cancelled by the body's bytes. The next request's deadline
                # starts here, as after any response.
                self.pending.wait(self)
        super().on_message_complete()

    def _answered_early(self) -> bool:
        """The request that just ended was answered already, and none waits after it.
        (An upgrade has no cycle of its own: `cycle` is still the previous request's.)"""
        if self.parser.should_upgrade() and self._should_upgrade():
            return False
        return self.cycle is not None and self.cycle.response_complete and not self.pipeline

    def on_response_complete(self) -> None:
        idle = not self.pipeline  # else the next request is in already
        super().on_response_complete()
        if idle and self.pending is not None and not self.transport.is_closing():
            self.pending.wait(self)

    def cut(self) -> None:
        """Close a connection whose request did not come in time (or that is the
        oldest pending when too many are)."""
        if self.pending is not None:
            self.pending.done(self)
        self.transport.close()
