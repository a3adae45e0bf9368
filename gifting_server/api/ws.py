"""The WebSocket edge: one connection's session. Frames in, use-case calls, frames out.

What a client may do on its connection: subscribe, unsubscribe, send gifts, ping.
`hub/connection.py` speaks WebSocket and hands each message here; the app opens
one `ClientSession` per authenticated connection (`app.py`, `open_session`).

A `gift` goes through the same gift use case as HTTP (`ledger/gifts.py`) and is
acknowledged only after its script returned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from gifting_server import metrics
from gifting_server.api.overlay_guard import OverlayGuard
from gifting_server.auth import TOKEN_REVOKED, Identity, Role
from gifting_server.errors import CloseCode, ErrorCode, GiftingError
from gifting_server.ledger import gifts, overlay_tokens
from gifting_server.ledger.gift_admission import refusal_message
from gifting_server.ledger.store import Store
from gifting_server.protocol import (
    Ping,
    ProtocolError,
    SendGift,
    Subscribe,
    Unsubscribe,
    decode_client_message,
    error_message,
    refusal_frame,
)

if TYPE_CHECKING:
    from gifting_server.hub.connection import HubConnection, OpenSession
    from gifting_server.hub.hub import Hub

log = logging.getLogger("gifting_server.ws")


class ClientSession:
    def __init__(
        self,
        connection: HubConnection,
        identity: Identity,
        hub: Hub,
        store: Store,
        guard: OverlayGuard | None = None,
    ) -> None:
        self.connection = connection
        self.loop = connection.loop
        self.identity = identity
        self.hub = hub
        self.store = store
        self.limits = hub.settings.websocket
        # Streams subscribed or being subscribed: what counts toward the limit.
        self.streams: set[str] = set()
        # stream → the last of its subscribe/unsubscribe frames not done yet. Each
        # waits for the one before it, so that they take effect (and are answered)
        # in the order they were sent.
        self.pending: dict[str, asyncio.Task[None]] = {}
        self.tokens = float(self.limits.burst)
        self.refilled_at = time.monotonic()
        self.refused_in_row = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.gifts: set[asyncio.Task[None]] = set()  # gifts under way: `close` lets them end
        self.open = True
        # An overlay token can be revoked (a rotation): checked now, at each
        # subscribe, and on the stream's `overlay_revoked` events (`OverlayGuard`).
        self.guard = guard if identity.role is Role.OVERLAY and identity.stream_id else None
        if self.guard is not None:
            assert identity.stream_id is not None
            self.guard.add(identity.stream_id, self, identity.generation)
            self._spawn(self._check_token())

    def on_message(self, data: bytes) -> None:
        # Every message takes a token, unreadable ones too: a flood of garbage is
        # a flood all the same.
        allowed = self._take_token()
        try:
            message = decode_client_message(data, self.connection.encoding)
        except ProtocolError as e:
            if allowed:
                self.refused_in_row = 0
                self._error(e.code, e.message, e.message_id)
            else:
                self._refuse(e.message_id)
            return
        if type(message) is SendGift:  # first: past the ceiling, nearly every message
            if not allowed:
                self._refuse(message.id)
                return
            self.refused_in_row = 0
            self._gift(message)
            return
        if not allowed:
            self._refuse(None)
            return
        self.refused_in_row = 0
        if isinstance(message, Ping):
            self.connection.send_message({"type": "pong"})
        elif isinstance(message, Subscribe):
            self._subscribe(message)
        else:
            assert isinstance(message, Unsubscribe)
            self._unsubscribe(message.stream_id)

    def allow_frame(self) -> bool:
        """A WebSocket ping or pong frame, or a continuation frame of a message in
        fragments, costs a token like a message; over the rate it gets `rate_limited`
        (a ping instead of its pong) and counts toward the close with 4008."""
        if not self._take_token():
            self._refuse(None)
            return False
        self.refused_in_row = 0
        return True

    def _refuse(self, message_id: str | None) -> None:
        """Over the rate: answer rate_limited, or close after too many in a row."""
        self.refused_in_row += 1
        if self.refused_in_row >= self.limits.abuse_close_after:
            metrics.DROPS.labels(reason="rate_limited").inc()
            self.connection.close(CloseCode.RATE_LIMITED, "rate limited: too many messages")
            return
        self._error(ErrorCode.RATE_LIMITED, "too many messages; slow down", message_id)

    def close(self) -> None:
        if not self.open:
            return
        self.open = False
        if self.guard is not None:
            assert self.identity.stream_id is not None
            self.guard.discard(self.identity.stream_id, self)
        for stream_id in list(self.streams):
            self.hub.leave(self.connection, stream_id)
        self.streams.clear()
        self.pending.clear()
        for task in self.tasks:
            task.cancel()  # a join cut short leaves no room behind (Hub.join)
        # The gifts under way are not cancelled: their calls are in Redis's queue, and
        # a gift holds its places in flight (gift_admission.py) until Redis answered
        # it. Cancelled, it would give them back at once, and a client closing and
        # connecting again would start a fresh bound of gifts each time while the
        # first are still under way. Each runs on; its answer goes nowhere.

    def _take_token(self) -> bool:
        now = time.monotonic()
        self.tokens = min(
            float(self.limits.burst),
            self.tokens + (now - self.refilled_at) * self.limits.rate_per_s,
        )
        self.refilled_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def _subscribe(self, message: Subscribe) -> None:
        who = self.identity
        if who.role is Role.OVERLAY and who.stream_id != message.stream_id:
            self._error(ErrorCode.FORBIDDEN, "this overlay token is for another stream")
            return
        if (
            message.stream_id not in self.streams
            and len(self.streams) >= self.limits.max_subscriptions
        ):
            self._error(ErrorCode.INVALID_REQUEST, "too many subscriptions on one connection")
            return
        self.streams.add(message.stream_id)
        # A resubscribe (e.g. with `since`) starts afresh: the hub takes the
        # connection out of the stream's delivery before it joins again.
        self._in_turn(message.stream_id, lambda: self._join(message))

    def revoke(self) -> None:
        metrics.DROPS.labels(reason=TOKEN_REVOKED).inc()
        self.connection.close(CloseCode.UNAUTHORIZED, TOKEN_REVOKED)

    async def _check_token(self) -> None:
        """Close the connection if its overlay token was revoked. An unreadable Redis
        lets it pass here: the check at subscribe decides."""
        try:
            await overlay_tokens.check(self.store, self.identity)
        except GiftingError as e:
            if e.code is ErrorCode.TOKEN_REVOKED:
                self.revoke()

    async def _join(self, message: Subscribe) -> None:
        stream_id = message.stream_id
        try:
            if self.guard is not None:
                # Before: a revoked token gets nothing. After: the subscription is
                # live, so a rotation after this read arrives as an event.
                await overlay_tokens.check(self.store, self.identity)
                await self.hub.join(self.connection, stream_id, message.since)
                await overlay_tokens.check(self.store, self.identity)
            else:
                await self.hub.join(self.connection, stream_id, message.since)
        except GiftingError as e:
            if self.pending.get(stream_id) is asyncio.current_task():
                self.streams.discard(stream_id)
            if e.code is ErrorCode.TOKEN_REVOKED:
                self.revoke()
            else:
                self._error(e.code, e.message)
        except Exception:
            if self.pending.get(stream_id) is asyncio.current_task():
                self.streams.discard(stream_id)  # unless a later frame decided otherwise
            log.warning("subscribe to %s failed", stream_id, exc_info=True)
            self._error(ErrorCode.SERVICE_UNAVAILABLE, "could not subscribe now; retry")

    def _unsubscribe(self, stream_id: str) -> None:
        self.streams.discard(stream_id)
        if stream_id in self.pending:
            self._in_turn(stream_id, lambda: self._leave(stream_id))
        else:
            self._leave_now(stream_id)

    async def _leave(self, stream_id: str) -> None:
        self._leave_now(stream_id)

    def _leave_now(self, stream_id: str) -> None:
        self.hub.leave(self.connection, stream_id)
        self.connection.send_message({"type": "unsubscribed", "stream_id": stream_id})

    def _in_turn(self, stream_id: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work` once the stream's frames before it are done, however they ended."""
        before = self.pending.get(stream_id)

        async def run() -> None:
            if before is not None:
                await asyncio.wait([before])
            await work()

        task = self.pending[stream_id] = self._spawn(run())

        def done(_: asyncio.Task[None]) -> None:
            if self.pending.get(stream_id) is task:
                del self.pending[stream_id]

        task.add_done_callback(done)

    def _gift(self, message: SendGift) -> None:
        # Past the worker's ceiling (or the sender's bound on gifts under way) the gift
        # is refused here, before its task: every refusal costs the worker CPU that the
        # gifts it takes need. (send_gift asks again, after the gift's own rules, for
        # those that pass.)
        refused = gifts.admission_refused(self.store, self.identity, message.stream_id)
        if refused is not None:
            code, retry_after_ms = refused
            metrics.count_gift("ws", code.code)
            self.connection.send(
                refusal_frame(
                    message.id, code, retry_after_ms, refusal_message, self.connection.encoding
                )
            )
            return

        async def send() -> None:
            try:
                receipt = await gifts.send_gift(
                    self.store,
                    self.identity,
                    message.stream_id,
                    message.gift_id,
                    message.count,
                    message.id,
                    message=message.message,
                    timed=metrics.gift_latency("ws").time,
                )
            except GiftingError as e:
                self._gift_refused(e.code, e.message, message.id, e.retry_after_ms)
                return
            except Exception:
                log.exception("gift %s from %s failed", message.id, self.identity.user_id)
                self._gift_refused(
                    ErrorCode.INTERNAL_ERROR, "unexpected error; retry with the same id", message.id
                )
                return
            metrics.count_gift("ws", "ok")
            self.connection.send_message(
                {
                    "type": "ack",
                    "id": message.id,
                    "event_id": receipt.event_id,
                    "coins": receipt.coins,
                    "combo": receipt.combo,
                }
            )

        self._spawn(send(), self.gifts)

    def _spawn(
        self, work: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]] | None = None
    ) -> asyncio.Task[None]:
        """Start `work` among `tasks` (the ones `close` cancels, unless given others)."""
        kept = self.tasks if tasks is None else tasks
        task = self.loop.create_task(work)
        kept.add(task)
        task.add_done_callback(kept.discard)
        return task

    def _gift_refused(
        self, code: ErrorCode, message: str, message_id: str, retry_after_ms: int | None = None
    ) -> None:
        metrics.count_gift("ws", code.code)
        self._error(code, message, message_id, retry_after_ms)

    def _error(
        self,
        code: ErrorCode,
        message: str,
        message_id: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        self.connection.send_message(error_message(code, message, message_id, retry_after_ms))


def session_opener(hub: Hub, store: Store) -> OpenSession:
    """What `HubConnection` calls (as app_state["open_session"]) once a client is in."""
    guard = OverlayGuard()
    hub.listen(overlay_tokens.REVOKED_KIND, guard.on_revoked)

    def open_session(connection: HubConnection, identity: Identity) -> ClientSession:
        return ClientSession(connection, identity, hub, store, guard)

    return open_session
