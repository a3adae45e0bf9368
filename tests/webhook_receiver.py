"""A real HTTP endpoint for outgoing webhooks: uvicorn serving a small starlette app
on a free loopback port, in the test's own event loop. It checks each delivery's
signature against the secrets it is told, keeps every delivery in arrival order, and
answers what the test tells it (200, or 500 for a while)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gifting_server.auth import verify_webhook
from gifting_server.errors import GiftingError
from tests.redis_process import free_port


@dataclass
class Delivery:
    message_id: str  # the Gifting-Message-Id header
    body: dict[str, Any]
    signed_with: str | None  # which of the receiver's secrets the signature matches
    answered: int


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.secrets: list[str] = []
        self.deliveries: list[Delivery] = []
        self.fail_next = 0  # answer this many deliveries with 500 before any 200
        self.always_fail = False
        self.redirect_to: str | None = None  # answer 307 to there instead of 200
        # While set: each delivery waits for `release` before it is answered (counted
        # in `arrived` meanwhile), so that a test can act while a delivery is in flight.
        self.hold = False
        self.release = asyncio.Event()
        self.arrived = 0
        self.arrivals: list[str] = []  # message ids as they arrive, answered or not
        # Deliveries arrived and not yet answered whose sender still waits (a held one
        # no more once its sender closed the connection), now and at most.
        self.in_flight = 0
        self.most_in_flight = 0
        self.changed = asyncio.Condition()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def hook(self, request: Request) -> Response:
        raw = await request.body()
        async with self.changed:
            self.arrived += 1
            self.arrivals.append(request.headers.get("gifting-message-id", ""))
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.changed.notify_all()
        waited = [True]  # by the sender
        try:
            return await self._answer(request, raw, waited)
        finally:
            if waited[0]:
                self.in_flight -= 1

    async def _answer(self, request: Request, raw: bytes, waited: list[bool]) -> Response:
        if self.hold:
            released = asyncio.ensure_future(self.release.wait())
            gone = asyncio.ensure_future(request.receive())  # a disconnect, the body read
            try:
                await asyncio.wait({released, gone}, return_when=asyncio.FIRST_COMPLETED)
                if gone.done() and waited[0]:  # the sender gave up on it
                    waited[0] = False
                    self.in_flight -= 1
                await released
            finally:
                gone.cancel()
                released.cancel()
        signed_with = None
        for secret in self.secrets:
            with contextlib.suppress(GiftingError):
                verify_webhook(secret, raw, request.headers.get("gifting-signature"), 300)
                signed_with = secret
        status = 200
        if self.always_fail or self.fail_next > 0:
            self.fail_next = max(0, self.fail_next - 1)
            status = 500
        delivery = Delivery(
            request.headers.get("gifting-message-id", ""), orjson.loads(raw), signed_with, status
        )
        async with self.changed:
            self.deliveries.append(delivery)
            self.changed.notify_all()
        if status == 200 and self.redirect_to is not None:
            return Response(status_code=307, headers={"Location": self.redirect_to})
        return Response(b"ok" if status == 200 else b"broken", status_code=status)

    def delivered(self) -> list[Delivery]:
        """The deliveries answered 200, in arrival order."""
        return [d for d in self.deliveries if d.answered == 200]

    def events(self) -> list[dict[str, Any]]:
        """The events delivered (200), first arrival of each message id, in order."""
        seen: set[str] = set()
        events = []
        for d in self.delivered():
            if d.message_id not in seen:
                seen.add(d.message_id)
                events.append(d.body["event"])
        return events

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Wait until `count` distinct messages were answered 200; their events."""
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: len(self.events()) >= count), timeout
            )
        return self.events()

    async def wait_for_arrivals(self, count: int, timeout: float = 15.0) -> None:
        async with self.changed:
            await asyncio.wait_for(self.changed.wait_for(lambda: self.arrived >= count), timeout)

    async def wait_for_attempts(self, count: int, timeout: float = 15.0) -> None:
        async with self.changed:
            await asyncio.wait_for(
                self.changed.wait_for(lambda: len(self.deliveries) >= count), timeout
            )


@contextlib.asynccontextmanager
async def receiving() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    app = Starlette(routes=[Route("/hook", receiver.hook, methods=["POST"])])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=receiver.port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    # Ctrl-C stays pytest's: uvicorn would take SIGINT over in the main thread.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield receiver
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
