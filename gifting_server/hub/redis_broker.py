"""The broker on Redis: one pub/sub subscription per stream that has local
viewers, per worker. The hub above it knows nothing of Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from gifting_server.hub.broker import OnEvent, OnResubscribed
from gifting_server.ledger import keys
from gifting_server.tasks import cancel_and_wait

log = logging.getLogger("gifting_server.broker")

CHANNEL_PREFIX = keys.stream_channel("")[: -len("}:events")]
CHANNEL_SUFFIX = "}:events"


def stream_of_channel(channel: bytes) -> str:
    return channel.decode()[len(CHANNEL_PREFIX) : -len(CHANNEL_SUFFIX)]


def _ignore(*_: object) -> None:
    pass


class RedisBroker:
    """A `Broker` on one Redis (`decode_responses=False`)."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self.on_event: OnEvent = _ignore
        self.on_resubscribed: OnResubscribed = _ignore
        self.pubsub: PubSub = redis.pubsub()
        self.confirmed: dict[str, asyncio.Event] = {}
        # A hung Redis never confirms: wait for it no longer than for any other answer.
        self.timeout_s = redis.connection_pool.connection_kwargs.get("socket_timeout") or 5.0
        # redis-py's PubSub opens its connection on the first command; concurrent
        # first subscribes would each open one and all but the last would be lost.
        self.subscribing = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None

    def start(self, on_event: OnEvent, on_resubscribed: OnResubscribed) -> None:
        self.on_event, self.on_resubscribed = on_event, on_resubscribed
        self.task = asyncio.create_task(self._read_forever(), name="broker-reader")

    async def stop(self) -> None:
        if self.task:
            await cancel_and_wait(self.task)
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()  # type: ignore[no-untyped-call]

    async def subscribe(self, stream_id: str) -> None:
        """Returns once Redis confirmed it: from then on no published event is missed.
        Raises TimeoutError when Redis does not confirm in time (unsubscribe then)."""
        confirmed = self.confirmed.get(stream_id)
        if confirmed is None:
            confirmed = self.confirmed[stream_id] = asyncio.Event()
            async with self.subscribing:
                await self.pubsub.subscribe(keys.stream_channel(stream_id))
        await asyncio.wait_for(confirmed.wait(), self.timeout_s)

    async def unsubscribe(self, stream_id: str) -> None:
        if self.confirmed.pop(stream_id, None) is not None:
            with contextlib.suppress(redis_errors.RedisError, OSError):
                await self.pubsub.unsubscribe(keys.stream_channel(stream_id))

    async def _read_forever(self) -> None:
        backoff = 0.05
        while True:
            try:
                if not self.confirmed or not self.pubsub.subscribed:
                    await asyncio.sleep(0.05)  # nothing to read until a stream is followed
                    continue
                message = await self.pubsub.get_message(timeout=1.0)
                backoff = 0.05
            except (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError) as e:
                log.warning("pub/sub connection lost (%s); reconnecting in %.2fs", e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            except Exception:
                # Whatever it is, fan-out of every stream depends on this loop: go on.
                log.exception("pub/sub read failed; retrying in %.2fs", backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                continue
            if message is None:
                continue
            try:
                self._dispatch(message)
            except Exception:
                log.exception("pub/sub message %r could not be handled", message.get("type"))

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "message":
            self.on_event(stream_of_channel(channel), message["data"])
        elif kind == "subscribe":
            stream_id = stream_of_channel(channel)
            confirmed = self.confirmed.get(stream_id)
            if confirmed is None:
                return
            if confirmed.is_set():
                self.on_resubscribed(stream_id)
            confirmed.set()
