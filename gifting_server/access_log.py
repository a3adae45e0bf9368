"""One access line per HTTP request, and the request id every response carries.

The path is logged without its query string: overlay pages carry their token there.
A request id comes from the client's `X-Request-Id` when it is short and made of safe
characters (so it cannot forge log lines), else it is generated; either way the
response echoes it. The WebSocket connection logs its own line when it closes
(hub/connection.py), through `ws_line`.
"""

from __future__ import annotations

import logging
import secrets
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gifting_server.ids import is_key
from gifting_server.logs import ACCESS

HEADER = b"x-request-id"


def request_id(given: bytes | None) -> str:
    """The client's id if it is sane (what an idempotency key may be: ids.py), else a
    new one."""
    if given is not None:
        text = given.decode("latin-1")
        if is_key(text):
            return text
    return secrets.token_hex(8)


def _given_id(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        if name.lower() == HEADER:
            return value
    return None


class AccessLog:
    """ASGI middleware, outermost but for Starlette's error handler: an exception that
    escaped every handler is logged here as the 500 that handler answers."""

    def __init__(self, app: ASGIApp, enabled: bool = True) -> None:
        self.app = app
        self.enabled = enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(_given_id(scope.get("headers", [])))
        header = (HEADER, rid.encode())
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.enabled and ACCESS.isEnabledFor(logging.INFO):
                ACCESS.info(
                    "%s %s %d",
                    scope["method"],
                    scope["path"],
                    status,
                    extra={
                        "fields": {
                            "method": scope["method"],
                            "path": scope["path"],
                            "status": status,
                            "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                            "request_id": rid,
                        }
                    },
                )


def ws_line(path: str, code: int | None, started: float, rid: str, user: str | None) -> None:
    """A WebSocket connection has closed: `started` is its `time.perf_counter()` at the
    upgrade; `code` the close code sent or received (None: the socket just dropped)."""
    if ACCESS.isEnabledFor(logging.INFO):
        ACCESS.info(
            "WS %s %s",
            path,
            code if code is not None else "-",
            extra={
                "fields": {
                    "method": "WS",
                    "path": path,
                    "close_code": code,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "request_id": rid,
                    "user": user,
                }
            },
        )
