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
from collections.abc import Coroutine, Hashable
from typing import Any, ClassVar, Self, cast

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


class Window:
    """The calls queued for one Redis (one `Scripts`) during this window, in groups
    that each go as calls of at most `MAX_BATCH` (`call`, a subclass's): the
    machinery every batched path shares (the gifts of a single Redis here, the
    credits of gifts across slots in `transfer_batch.py`). Each subclass keeps its
    own window a Redis."""

    _of: ClassVar[weakref.WeakKeyDictionary[Scripts, Window]]
    # The window ends with this pass of the loop, whatever `gift_batch_window_ms`, and
    # waits for no call in flight: the credits of gifts across slots, which batch what
    # one pass brings (the debits answered in one read; a step's batch answered at
    # once brings the next step's calls in one pass) and add no wait to a gift.
    one_pass: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._of = weakref.WeakKeyDictionary()

    @classmethod
    def of(cls, scripts: Scripts) -> Self:
        batch = cls._of.get(scripts)
        if batch is None:
            batch = cls._of[scripts] = cls(scripts)
        return cast(Self, batch)

    @classmethod
    async def drain_all(cls, scripts: Scripts) -> None:
        """`drain` the windows of every batched path over this Redis, until none holds
        a call (a drained step's answers may queue its next step's calls)."""
        kinds, found = [Window], []
        while kinds:
            kind = kinds.pop()
            kinds += kind.__subclasses__()
            found.append(kind)
        windows = [w for w in (kind._of.get(scripts) for kind in found[1:]) if w is not None]
        while True:
            # One pass of the loop: the callers a drained call answered queue their
            # next step's calls before the windows are looked at again.
            await asyncio.sleep(0)
            if not any(w.queued or w.running for w in windows):
                return
            for window in windows:
                await window.drain()

    def __init__(self, scripts: Scripts) -> None:
        self.scripts = scripts
        self.queued: list[tuple[Hashable, tuple[Any, asyncio.Future[Any]]]] = []
        self.loop: asyncio.AbstractEventLoop  # set by the first call of each window
        self.timer: asyncio.Handle  # the window's end, set with it
        self.calls_in_flight = 0  # set by the first call of each window; 0: any number
        self.held = False  # the window ended with calls_in_flight calls in flight
        self.running: set[asyncio.Task[None]] = set()
        self.under_way: dict[Hashable, int] = {}  # by group: items sent, not yet answered

    async def answer(self, group: Hashable, item: Any, options: RedisOptions) -> Any:
        """`item`'s answer: its call made at once, alone, when no other item of its
        group is under way (a quiet stream pays no pass of the loop for a batch that
        would hold it alone); else queued with the others of its group (`queue`),
        which come while one is under way: a busy stream's."""
        under_way = self.under_way.get(group, 0)
        self.under_way[group] = under_way + 1
        try:
            if under_way == 0:
                return (await self.call(group, [item]))[0]
            return await self.queue(group, item, options)
        finally:
            left = self.under_way[group] - 1
            if left:
                self.under_way[group] = left
            else:
                del self.under_way[group]

    def queue(self, group: Hashable, item: Any, options: RedisOptions) -> asyncio.Future[Any]:
        """The answer to `item`, sent with the others of its `group` queued in this
        window. From `options`: how long the first call of an empty window waits for
        others (`gift_batch_window_ms`; 0: until the end of this pass of the loop); with
        `gift_calls_in_flight` calls in flight at the window's end, the window waits
        for the end of one of them (0: no limit)."""
        if not self.queued:
            # The loop of this window, asked once: on Python 3.11 each asking is a
            # getpid() system call.
            self.loop = asyncio.get_running_loop()
            self.calls_in_flight = 0 if self.one_pass else options.gift_calls_in_flight
            if self.one_pass:
                # A task started now runs once every caller of this pass has queued;
                # it sends the first call itself: one pass of the loop later than a
                # call made alone, where a timer and a task a call would take two.
                self._start(self._send_pass())
            elif options.gift_batch_window_ms > 0:
                window_s = options.gift_batch_window_ms / 1000
                self.timer = self.loop.call_later(window_s, self._window_ended)
            else:
                self.timer = self.loop.call_soon(self._window_ended)
        reply: asyncio.Future[Any] = self.loop.create_future()
        self.queued.append((group, (item, reply)))
        if len(self.queued) >= MAX_BATCH:  # a full call waits for no one
            self._flush()
        return reply

    async def drain(self) -> None:
        """Send the calls waiting for their window (or for a call in flight) now, and
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
        if not self.one_pass:
            self.timer.cancel()  # this flush may come before the window's end
        self.held = False
        for call in self._calls():
            self._start(call)

    async def _send_pass(self) -> None:
        """A one-pass window's end: its first call from this task, the others each
        from its own (none when a full batch already went)."""
        calls = self._calls()
        for call in calls[1:]:
            self._start(call)
        if calls:
            await calls[0]

    def _calls(self) -> list[Coroutine[Any, Any, None]]:
        """The calls for what is queued, taken from the queue: one a group and
        `MAX_BATCH` items."""
        queued, self.queued = self.queued, []
        groups: dict[Hashable, list[tuple[Any, asyncio.Future[Any]]]] = {}
        for group, entry in queued:
            groups.setdefault(group, []).append(entry)
        return [
            self._run(group, entries[start : start + MAX_BATCH])
            for group, entries in groups.items()
            for start in range(0, len(entries), MAX_BATCH)
        ]

    def _start(self, call: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(call)
        self.running.add(task)
        task.add_done_callback(self._call_ended)

    async def _run(self, group: Hashable, entries: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            replies = await self.call(group, [item for item, _ in entries])
            if len(replies) != len(entries):
                # Only a defect of the script can say so; every caller must still hear
                # an answer, never wait for one that is not coming.
                raise RuntimeError(f"{len(replies)} replies to a call of {len(entries)}")
        except Exception as e:  # the call failed: so did each of its items
            for _, reply in entries:
                if not reply.done():
                    reply.set_exception(e)
            return
        for (_, reply), answer in zip(entries, replies, strict=True):
            if not reply.done():  # its caller was cancelled
                reply.set_result(answer)

    async def call(self, group: Hashable, items: list[Any]) -> list[Any]:
        """One call for these items of one group: one answer an item, in their order."""
        raise NotImplementedError


class GiftBatch(Window):
    """The gifts queued for one Redis (one `Scripts`) during this window; a group is a
    configuration (stores over one Redis may differ in theirs: one call each)."""

    def send_gift(
        self, keys: list[str], args: list[Any], options: RedisOptions
    ) -> asyncio.Future[Reply]:
        """send_gift's reply to this call (its keys and arguments, lua/send_gift.lua),
        sent with the other gifts of this window (`queue`). From `options`, besides the
        window's: a stream's events of the call published as one message
        (`events_per_call_message`)."""
        one_message = int(options.events_per_call_message)
        config = (*(args[i] for i in CONFIG_ARGS), one_message)
        return self.queue(config, (keys, args), options)

    async def call(self, group: Hashable, items: list[Any]) -> list[Any]:
        metrics.GIFT_BATCHES.inc()
        metrics.GIFTS_BATCHED.inc(len(items))
        if len(items) == 1:
            keys, args = items[0]
            return [await self.scripts.run("send_gift", keys, args)]
        gifts = [(keys, args, None) for keys, args in items]
        call = batch_call(cast(Config, group), gifts)  # type: ignore[arg-type]
        return split_replies(await self.scripts.run("send_gifts", *call))


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
