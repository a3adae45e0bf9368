"""What the Redis brokers share: one subscription per stream that has local
viewers, confirmed by Redis before `subscribe` returns, and the reader task that
hands each event to the hub. `redis_broker.py` (classic pub/sub, one Redis) and
`cluster_broker.py` (sharded pub/sub) say how to subscribe and how to read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gifting_server import events
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


class PubSubBroker:
    """A `Broker` whose subclass sends the subscribe command (`_send_subscribe`) and
    reads the messages (`_read_forever`), calling `_confirmed` for each subscribe
    confirmation."""

    reader_name = "broker-reader"

    def __init__(self, pubsub: Any, timeout_s: float) -> None:
        self.on_event: OnEvent = _ignore
        self.on_resubscribed: OnResubscribed = _ignore
        self.pubsub = pubsub
        self.confirmed: dict[str, asyncio.Event] = {}
        # A hung Redis never confirms: wait for it no longer than for any other answer.
        self.timeout_s = timeout_s
        # redis-py's pubsub opens its connections on the first command: concurrent
        # first subscribes would each open one and all but the last would be lost.
        # A broker that replaces its pubsub after a loss also takes this lock.
        self.subscribing = asyncio.Lock()
        self.task: asyncio.Task[None] | None = None

    def start(self, on_event: OnEvent, on_resubscribed: OnResubscribed) -> None:
        self.on_event, self.on_resubscribed = on_event, on_resubscribed
        self.task = asyncio.create_task(self._read_forever(), name=self.reader_name)

    async def stop(self) -> None:
        if self.task:
            await cancel_and_wait(self.task)
        with contextlib.suppress(Exception):
            await self.pubsub.aclose()

    async def subscribe(self, stream_id: str) -> None:
        """Returns once Redis confirmed it: from then on no published event is missed.
        Raises TimeoutError when Redis does not confirm in time (unsubscribe then)."""
        # The lock too: a broker subscribing every stream again after a loss holds it
        # while it reads the slot map, which takes long when nodes do not answer.
        async with asyncio.timeout(self.timeout_s):
            confirmed = self.confirmed.get(stream_id)
            if confirmed is None:
                confirmed = self.confirmed[stream_id] = asyncio.Event()
                async with self.subscribing:
                    await self._send_subscribe(keys.stream_channel(stream_id))
            await confirmed.wait()

    async def _send_subscribe(self, channel: str) -> None:
        raise NotImplementedError

    async def _read_forever(self) -> None:
        raise NotImplementedError

    def _dispatch(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    def _deliver(self, message: dict[str, Any]) -> None:
        """One message to `_dispatch`: whatever goes wrong with it, the reader that
        every stream's fan-out depends on goes on."""
        try:
            self._dispatch(message)
        except Exception:
            log.exception("pub/sub message %r could not be handled", message.get("type"))

    def _published(self, channel: bytes, message: bytes) -> None:
        """A message on a stream's channel: its events to the hub, one by one, in order
        (a message may carry several: events.published)."""
        stream_id = stream_of_channel(channel)
        for raw in events.published(message):
            self.on_event(stream_id, raw)

    def _confirmed(self, channel: bytes) -> None:
        """Redis confirmed a subscription: the first one lets `subscribe` return; a
        later one (after a lost connection) means events may have been missed."""
        stream_id = stream_of_channel(channel)
        confirmed = self.confirmed.get(stream_id)
        if confirmed is None:
            return
        if confirmed.is_set():
            self.on_resubscribed(stream_id)
        confirmed.set()
