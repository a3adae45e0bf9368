"""A WebSocket to gifting_server's hub for locust users: websocket-client on gevent
(locust patches sockets, so a blocking read yields to the other users). Every
answer and failure is reported to locust as a request of type "WS"."""

from __future__ import annotations

import contextlib
import json
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

import gevent
import msgpack
import websocket
from gevent.event import AsyncResult
from locust import User

# How an `events` frame starts (the server writes "type" first): gifters skip those unread.
EVENTS_JSON = b'{"type":"events"'
EVENTS_MSGPACK = b"\x83\xa4type\xa6events"


# Requests named "<name>: REFUSED_OVERLOADED": a server past its ceiling refused the
# gift at once, changing nothing, and said when to send it again; it was retried.
REFUSED_OVERLOADED = "refused overloaded, retried"


def is_overloaded(answer: dict[str, Any]) -> bool:
    return (
        answer.get("type") == "error"
        and answer.get("code") == "service_unavailable"
        and isinstance(answer.get("retry_after_ms"), int)
    )


def overload_retry(retry_after_ms: float) -> float:
    """Seconds to wait before sending a refused gift again: what the server asked,
    plus up to half as much again, so that the refused crowd does not come back in
    the same instant."""
    return retry_after_ms / 1000 * random.uniform(1.0, 1.5)


class GiftRefused(Exception):
    """The server answered with an `error` frame."""


class ConnectionLost(Exception):
    pass


class EventsOutOfOrder(Exception):
    """A viewer missed events (a gap in event ids) or got one twice."""


class HubSocket:
    """One WebSocket to /v1/ws. A reader greenlet answers pings, hands each ack or error
    to the gift waiting for it, and passes `events` frames to `on_events`."""

    def __init__(
        self,
        user: User,
        on_events: Callable[[dict[str, Any], int], None] | None = None,
        on_subscribed: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.user = user
        self.options = user.environment.parsed_options
        self.on_events = on_events
        self.on_subscribed = on_subscribed
        self.ws: websocket.WebSocket | None = None
        self.reader: gevent.Greenlet[Any, Any] | None = None
        self.waiting: dict[str, AsyncResult[tuple[dict[str, Any], int]]] = {}
        self.closing = False

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.ws.connected and not self.closing

    def report(
        self, name: str, started: float, size: int = 0, error: Exception | None = None
    ) -> None:
        self.user.environment.events.request.fire(
            request_type="WS",
            name=name,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=size,
            exception=error,
            context={},
        )

    def connect(self, token: str) -> bool:
        url = self.user.host.replace("http", "ws", 1).rstrip("/") + "/v1/ws"
        protocol = "gifting.v1.msgpack" if self.options.msgpack else "gifting.v1.json"
        started = time.perf_counter()
        self.closing = False
        try:
            self.ws = websocket.create_connection(
                url,
                timeout=self.options.ack_timeout,
                header=[f"Authorization: Bearer {token}"],
                subprotocols=[protocol],
                skip_utf8_validation=True,  # frames are parsed anyway; the check costs a lot
                enable_multithread=True,  # the reader greenlet answers pings while we send
            )
        except (websocket.WebSocketException, OSError) as e:
            self.report("connect", started, error=e)
            return False
        self.ws.settimeout(None)
        self.report("connect", started)
        self.reader = gevent.spawn(self._read, self.ws)
        return True

    def subscribe(self, stream_id: str, since: int | None = None) -> dict[str, Any] | None:
        message: dict[str, Any] = {"type": "subscribe", "stream_id": stream_id}
        if since is not None:
            message["since"] = since
        return self._ask(f"subscribe:{stream_id}", message, "subscribe")

    def send_gift(self, stream_id: str, gift_id: str, count: int) -> dict[str, Any] | None:
        """The gift's ack, or None (a failure, reported). A gift refused by an overloaded
        server (`service_unavailable` with `retry_after_ms`) is sent again with the
        same id after that long, as a client would (`overload_retry`)."""
        message_id = uuid.uuid4().hex  # also the gift's idempotency key
        message = {
            "type": "gift",
            "id": message_id,
            "stream_id": stream_id,
            "gift_id": gift_id,
            "count": count,
        }
        retries = self.options.overload_retries
        for attempt in range(retries + 1):
            answer = self._ask(message_id, message, "gift", retry_later=attempt < retries)
            if answer is None or answer["type"] == "ack":
                return answer
            gevent.sleep(overload_retry(answer["retry_after_ms"]))
        return None

    def _ask(
        self, key: str, message: dict[str, Any], name: str, *, retry_later: bool = False
    ) -> dict[str, Any] | None:
        """Send and wait for the answer filed under `key`; report it as request `name`.
        With `retry_later`, an overloaded server's refusal is answered (to be sent again)
        and reported apart as `REFUSED_OVERLOADED`, not as a failure."""
        waiter: AsyncResult[tuple[dict[str, Any], int]] = AsyncResult()
        self.waiting[key] = waiter
        started = time.perf_counter()
        try:
            if self.ws is None or not self.is_open:
                raise ConnectionLost("not connected")
            if self.options.msgpack:
                self.ws.send(msgpack.packb(message), opcode=websocket.ABNF.OPCODE_BINARY)
            else:
                self.ws.send(json.dumps(message, separators=(",", ":")))
            answer, size = waiter.get(timeout=self.options.ack_timeout)
        except gevent.Timeout:
            self.report(
                name, started, error=TimeoutError(f"no answer in {self.options.ack_timeout}s")
            )
            return None
        except (websocket.WebSocketException, OSError, ConnectionLost) as e:
            self.report(name, started, error=ConnectionLost(str(e) or type(e).__name__))
            return None
        finally:
            self.waiting.pop(key, None)
        if retry_later and is_overloaded(answer):
            self.report(f"{name}: {REFUSED_OVERLOADED}", started, size)
            return answer
        if answer["type"] == "error":
            error = GiftRefused(f"{answer['code']}: {answer['message']}")
            self.report(name, started, size, error)
            return None
        self.report(name, started, size)
        return answer

    def _read(self, ws: websocket.WebSocket) -> None:
        skip_events = self.on_events is None
        while True:
            try:
                opcode, frame = ws.recv_data_frame(True)
            except (websocket.WebSocketException, OSError) as e:
                return self._lost(f"{type(e).__name__}: {e}")
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(frame.data[:2], "big") if len(frame.data) >= 2 else 1005
                return self._lost(f"closed {code} {frame.data[2:].decode(errors='replace')}")
            data = frame.data
            if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                continue
            # Gifters read every event of their stream but need none: skip without decoding.
            if skip_events and data.startswith((EVENTS_JSON, EVENTS_MSGPACK)):
                continue
            message = (
                msgpack.unpackb(data)
                if opcode == websocket.ABNF.OPCODE_BINARY
                else json.loads(data)
            )
            kind = message.get("type")
            if kind == "events":
                if self.on_events:
                    self.on_events(message, len(data))
            elif kind in ("ack", "error") and message.get("id") in self.waiting:
                self.waiting[message["id"]].set((message, len(data)))
            elif kind == "subscribed":
                if self.on_subscribed:
                    self.on_subscribed(message)
                key = f"subscribe:{message['stream_id']}"
                if key in self.waiting:
                    self.waiting[key].set((message, len(data)))
            elif kind == "error":  # not an answer to a gift: e.g. a refused subscribe
                pending = next((k for k in self.waiting if k.startswith("subscribe:")), None)
                if pending:
                    self.waiting[pending].set((message, len(data)))

    def _lost(self, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.report("connection", time.perf_counter(), error=ConnectionLost(reason))
        for waiter in list(self.waiting.values()):
            waiter.set_exception(ConnectionLost(reason))

    def close(self) -> None:
        self.closing = True
        if self.ws is None:
            return
        with contextlib.suppress(websocket.WebSocketException, OSError):
            self.ws.send_close()
        if self.reader is not None and self.reader is not gevent.getcurrent():
            self.reader.kill(block=False)
        self.ws.shutdown()
