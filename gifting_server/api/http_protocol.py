"""uvicorn's HTTP protocol (httptools) with a deadline for every request head.

uvicorn waits for ever for a request head that never ends (slowloris): connections
that send `GET /v1/ws?token=… HTTP/1.1\\r\\nHost: …\\r\\n` and then nothing, or a
header line now and then, are held for ever. Here a connection must finish its head
within `[http] request_head_timeout_s` of connecting, or of its previous response on
a kept-alive connection, whatever it trickles meanwhile; and a worker keeps at most
`[http] max_pending_connections` connections whose head is not complete: beyond
that the oldest is closed (a real client sends its head at once, so it is never the
oldest). A /v1/ws upgrade is a request like any other until its head is complete;
then `HubConnection` takes the socket and checks the token at once.
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gifting_server.config import Http


class PendingHeads:
    """The connections of one server whose request head is not complete, oldest
    first, each with the timer that closes it when its time is up."""

    def __init__(self, limits: Http) -> None:
        self.limits = limits
        self.deadlines: dict[HttpProtocol, asyncio.TimerHandle] = {}

    def wait(self, connection: HttpProtocol) -> None:
        self.done(connection)
        while len(self.deadlines) >= self.limits.max_pending_connections:
            next(iter(self.deadlines)).cut()
        self.deadlines[connection] = asyncio.get_running_loop().call_later(
            self.limits.request_head_timeout_s, connection.cut
        )

    def done(self, connection: HttpProtocol) -> None:
        deadline = self.deadlines.pop(connection, None)
        if deadline is not None:
            deadline.cancel()


class HttpProtocol(HttpToolsProtocol):
    """Serve it as uvicorn's `http` (with `ws=HubConnection`); the app's lifespan
    state holds the server's `PendingHeads` under "pending_heads"."""

    pending: PendingHeads | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.pending = self.app_state.get("pending_heads")
        if self.pending is not None:
            self.pending.wait(self)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.pending is not None:
            self.pending.done(self)
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        if self.pending is not None:
            self.pending.done(self)
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        idle = not self.pipeline  # else the next request's head is already in
        super().on_response_complete()
        if idle and self.pending is not None and not self.transport.is_closing():
            self.pending.wait(self)

    def cut(self) -> None:
        """Close a connection whose head did not come in time (or that is the oldest
        pending when too many are)."""
        if self.pending is not None:
            self.pending.done(self)
        self.transport.close()
