"""The broker on Redis: one pub/sub subscription per stream that has local
viewers, per worker. The hub above it knows nothing of Redis."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from gifting_server.hub.pubsub_broker import PubSubBroker
from gifting_server.ledger import keys

log = logging.getLogger("gifting_server.broker")


class RedisBroker(PubSubBroker):
    """A `Broker` on one Redis (`decode_responses=False`): classic pub/sub."""

    def __init__(self, redis: Redis) -> None:
        timeout_s = redis.connection_pool.connection_kwargs.get("socket_timeout") or 5.0
        super().__init__(redis.pubsub(), timeout_s)
        self.redis = redis

    async def _send_subscribe(self, channel: str) -> None:
        await self.pubsub.subscribe(channel)

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
            if message is not None:
                self._deliver(message)

    def _dispatch(self, message: dict[str, Any]) -> None:
        kind, channel = message["type"], message["channel"]
        if kind == "message":
            self._published(channel, message["data"])
        elif kind == "subscribe":
            self._confirmed(channel)
