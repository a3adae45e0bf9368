"""The gifts of one flush in one script call: how a single Redis gets its gifts.

Every gift that reaches the ledger within one batching window (`[redis]
gift_batch_window_ms` from the first gift of an empty batch; 0: the same pass of the
event loop) is queued here; when the window ends they go to Redis as one `send_gifts`
call (lua/send_gifts.lua), at most `MAX_BATCH` gifts a call, instead of one
`send_gift` each. A batch that reaches `MAX_BATCH` goes at once, without waiting for
the window's end. Each call costs Redis a fixed share (the script's start, a socket
read and write, an AOF fsync) that a longer window splits between more gifts, for
that much more latency (docs/performance.md, "The batching window"); with `[redis]
gift_calls_in_flight`, a window's gifts also wait for one of that many calls in
flight to end (group commit). Redis runs the gifts of a call one
after the other, each with its own checks before its own writes, so each caller gets
exactly the reply its own `send_gift` would have given, sent after the gifts before
it. What a script call costs Redis whatever it carries (its start, its functions,
the configuration) is paid once a batch, and a stream's meta and its streamer's
credit are read and written once a call (docs/performance.md, "Batching"). A gift
alone in its window still goes as one `send_gift`.

A failure of the call (Redis gone, a timeout, replicas short) reaches every gift of
the batch as the same exception, as it would have reached each of their calls. A
caller gone while its gift waits (a connection closed) leaves the gift queued: it
goes whole with its batch, and its idempotency record answers the retry. A store
closing (the server's shutdown) sends the gifts still waiting and waits for the calls
in flight before its connection closes (`drain`).
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any, ClassVar

from gifting_server import metrics
from gifting_server.config import RedisOptions
from gifting_server.ledger.scripts import Scripts

# The most gifts in one call: Redis runs a call without a break, so this bounds how
# long one batch holds up every other client (~64 gifts ≈ a few ms of Redis).
MAX_BATCH = 64
# send_gift's arguments (lua/send_gift.lua) as send_gifts takes them: the configuration
# (the same for every gift of one store) once a call, the stream's once for its gifts,
# the rest once a gift. Age rule, share, combo window, rate, burst, ttl, history cap:
CONFIG_ARGS = tuple(range(9, 16))
# send_gifts' configuration: those seven, then whether a stream's events of the call go
# as one message ([redis] events_per_call_message).
Config = tuple[Any, ...]
STREAM_ARGS = (2, 19, 17)  # the streamer the caller expects, the stream id, its channel
# The clock (now, and the hold's end computed from it): read once for a stream's gifts of
# the call, its first gift's, and every gift of the stream in the call is stamped with
# it (one tonumber and check a stream, not a gift: docs/performance.md, "Batching").
CLOCK_ARGS = (7, 20)
GIFT_ARGS = (0, 1, 3, 4, 5, 6, 8, 16, 18)
# send_gift's keys: the idempotency record and the sender's wallet are the gift's own,
# the other eleven the stream's and its streamer's.
GIFT_KEYS = 2

Reply = list[Any]
Queued = tuple[list[str], list[Any], "asyncio.Future[Reply]"]


class GiftBatch:
    """The gifts queued for one Redis (one `Scripts`) during this window."""

    _of: ClassVar[weakref.WeakKeyDictionary[Scripts, GiftBatch]] = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, scripts: Scripts) -> GiftBatch:
        batch = cls._of.get(scripts)
        if batch is None:
            batch = cls._of[scripts] = cls(scripts)
        return batch

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts
        self.queued: list[tuple[Config, Queued]] = []
        self.loop: asyncio.AbstractEventLoop  # set by the first send_gift of each window
        self.timer: asyncio.Handle  # the window's end, set with it
        self.calls_in_flight = 0  # set by the first send_gift of each window; 0: any number
        self.held = False  # the window ended with calls_in_flight calls in flight
        self.running: set[asyncio.Task[None]] = set()

    def send_gift(
        self, keys: list[str], args: list[Any], options: RedisOptions
    ) -> asyncio.Future[Reply]:
        """send_gift's reply to this call (its keys and arguments, lua/send_gift.lua),
        sent with the other gifts of this window. From `options`: a stream's events of
        the call published as one message (`events_per_call_message`); how long the
        first gift of an empty batch waits for others (`gift_batch_window_ms`; 0: until
        the end of this pass of the loop); with `gift_calls_in_flight` calls in flight
        at the window's end, the batch waits for the end of one of them (0: no limit)."""
        if not self.queued:
            # The loop of this window, asked once: on Python 3.11 each asking is a
            # getpid() system call.
            self.loop = asyncio.get_running_loop()
            self.calls_in_flight = options.gift_calls_in_flight
            if options.gift_batch_window_ms > 0:
                window_s = options.gift_batch_window_ms / 1000
                self.timer = self.loop.call_later(window_s, self._window_ended)
            else:
                self.timer = self.loop.call_soon(self._window_ended)
        reply: asyncio.Future[Reply] = self.loop.create_future()
        one_message = int(options.events_per_call_message)
        self.queued.append(((*(args[i] for i in CONFIG_ARGS), one_message), (keys, args, reply)))
        if len(self.queued) >= MAX_BATCH:  # a full call waits for no one
            self._flush()
        return reply

    async def drain(self) -> None:
        """Send the gifts waiting for their window (or for a call in flight) now, and
        wait until every call in flight is answered: the connection is about to close."""
        while self.queued or self.running:
            if self.queued:
                self._flush()
            await asyncio.wait(set(self.running))

    def _window_ended(self) -> None:
        if self.calls_in_flight and len(self.running) >= self.calls_in_flight:
            self.held = True  # group commit: the end of a call in flight sends them
            return
        self._flush()

    def _call_ended(self, task: asyncio.Task[None]) -> None:
        self.running.discard(task)
        if self.held and self.queued:
            self._flush()

    def _flush(self) -> None:
        self.timer.cancel()  # this flush may come before the window's end
        self.held = False
        queued, self.queued = self.queued, []
        # Stores over one Redis may differ in their configuration: one call per configuration.
        by_config: dict[Config, list[Queued]] = {}
        for config, gift in queued:
            by_config.setdefault(config, []).append(gift)
        for config, gifts in by_config.items():
            for start in range(0, len(gifts), MAX_BATCH):
                task = self.loop.create_task(self._run(config, gifts[start : start + MAX_BATCH]))
                self.running.add(task)
                task.add_done_callback(self._call_ended)

    async def _run(self, config: Config, gifts: list[Queued]) -> None:
        metrics.GIFT_BATCHES.inc()
        metrics.GIFTS_BATCHED.inc(len(gifts))
        try:
            if len(gifts) == 1:
                keys, args, _ = gifts[0]
                replies = [await self.scripts.run("send_gift", keys, args)]
            else:
                replies = split_replies(
                    await self.scripts.run("send_gifts", *batch_call(config, gifts))
                )
            if len(replies) != len(gifts):
                # Only a defect of the script can say so; every caller must still hear
                # an answer, never wait for one that is not coming.
                raise RuntimeError(f"{len(replies)} replies to a call of {len(gifts)} gifts")
        except Exception as e:  # the call failed: so did each gift's
            for _, _, reply in gifts:
                if not reply.done():
                    reply.set_exception(e)
            return
        for (_, _, reply), answer in zip(gifts, replies, strict=True):
            if not reply.done():  # its caller was cancelled
                reply.set_result(answer)


def batch_call(config: Config, gifts: list[Queued]) -> tuple[list[str], list[Any]]:
    """send_gifts' keys and arguments for these send_gift calls (its header has the layout);
    `config`: send_gift's CONFIG_ARGS and the one-message flag (1/0)."""
    streams: dict[tuple[Any, ...], int] = {}
    stream_keys: list[str] = []
    stream_args: list[Any] = []
    gift_keys: list[str] = []
    gift_args: list[Any] = []
    for keys, args, _ in gifts:
        # The day leaderboard is among the stream's keys: gifts of one stream on both
        # sides of midnight are two streams here, each with its own clock.
        stream = (*keys[GIFT_KEYS:], *(args[i] for i in STREAM_ARGS))
        g = streams.get(stream)
        if g is None:
            g = streams[stream] = len(streams) + 1
            stream_keys += keys[GIFT_KEYS:]
            stream_args += [args[i] for i in (*STREAM_ARGS, *CLOCK_ARGS)]
        gift_keys += keys[:GIFT_KEYS]
        gift_args.append(g)
        gift_args += [args[i] for i in GIFT_ARGS]
    return stream_keys + gift_keys, [*config, len(streams), *stream_args, *gift_args]


def split_replies(flat: list[Any]) -> list[Reply]:
    """send_gifts' reply, its gifts' replies laid end to end (lua/send_gifts.lua,
    Output), as one send_gift reply a gift: 0 and five values, or a code alone."""
    replies: list[Reply] = []
    i = 0
    while i < len(flat):
        size = 6 if flat[i] == 0 else 1
        replies.append(flat[i : i + size])
        i += size
    return replies
