"""The steps of gifts across slots, batched: the gifts of one pass to one stream
gated with one `gift_gate_batch` call; their transfers credited on the stream with
one `credit_stream_batch` call, on the streamer with one `credit_streamer_batch`
call, and cleared with one `ZREM` an outbox (ledger/transfers.py, steps 1 and 3 to
5; docs/scaling.md, "A gift across slots"). The debit stays a gift's own: the
senders' wallets are in as many slots.

The window is gift_batch.py's (`Window`), one pass of the loop long, and only for
a busy group: a step whose group (its stream, its streamer and day, its outbox)
has nothing under way goes at once, alone, as it did before batching; the ones
that come while one is under way go together at the end of that pass (`answer`).
A gift across slots already waits for five round trips: it waits for no `[redis]
gift_batch_window_ms` on top. A batched credit carries at least `MIN_BATCH`
transfers: fewer go as the one-transfer scripts, pipelined.
A transfer's call is always built as its one-transfer script's (its keys and
arguments, `transfers.credit_stream_call`), so a transfer alone in its group goes
as that script, as the relay sends it; a batch takes the keys and arguments its
transfers share once, the rest once a transfer (`StepBatch.SHARED_KEYS` and the
others). Each transfer is answered its own reply: a code of its own refuses it
alone. A call that fails reaches each of its transfers as the same exception: each
is then credited or not at all (the scripts write a transfer's record after what
counts it), and the relay finishes it from the outbox.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any, ClassVar, cast

from gifting_server import metrics
from gifting_server.config import RedisOptions
from gifting_server.ledger.gift_batch import Window
from gifting_server.ledger.scripts import Scripts

Reply = list[Any]


class StepBatch(Window):
    """One step's calls for one Redis, grouped by the keys and arguments they share."""

    ONE: ClassVar[str]  # the one-transfer script
    BATCH: ClassVar[str]  # the batched script: shared keys, then one key a transfer
    SHARED_KEYS: ClassVar[tuple[int, ...]]  # of the one-transfer script's KEYS
    OWN_KEYS: ClassVar[tuple[int, ...]]
    SHARED_ARGS: ClassVar[tuple[int, ...]]  # of its ARGV
    OWN_ARGS: ClassVar[tuple[int, ...]]
    REPLY_SIZE: ClassVar[int]  # values of one transfer's reply (0 and the rest)
    one_pass = True
    ONE_MESSAGE: ClassVar[bool] = False  # the batch takes events_per_call_message
    # The fewest transfers a batched call carries: below, each goes as the one-transfer
    # script. The credits' batched scripts set up what a call shares (the includes'
    # functions, its tables) whatever its size, which a few transfers do not pay back.
    MIN_BATCH: ClassVar[int] = 2

    async def send(self, keys: list[str], args: list[Any], options: RedisOptions) -> Reply:
        """The reply of the one-transfer script to these keys and arguments: sent at
        once when no other transfer of its group is under way, else with the others
        of this window that share the group's (`Window.answer`)."""
        group: tuple[Any, ...] = (
            *(keys[i] for i in self.SHARED_KEYS),
            *(args[i] for i in self.SHARED_ARGS),
        )
        if self.ONE_MESSAGE:
            group = (*group, int(options.events_per_call_message))
        return cast(Reply, await self.answer(group, (keys, args), options))

    def __init__(self, scripts: Scripts) -> None:
        super().__init__(scripts)
        # Bound once: a labelled child looked up a call costs a lock and a dict.
        self.calls = metrics.TRANSFER_CALLS.labels(self.ONE)
        self.carried = metrics.TRANSFERS_BATCHED.labels(self.ONE)

    async def call(self, group: Hashable, items: list[Any]) -> list[Any]:
        self.carried.inc(len(items))
        if len(items) < self.MIN_BATCH:
            self.calls.inc(len(items))
            # Pipelined on the connection, in their order: what their calls alone cost.
            run = self.scripts.run
            return list(await asyncio.gather(*(run(self.ONE, k, a) for k, a in items)))
        self.calls.inc()
        shared = list(group)  # type: ignore[call-overload]
        batch_keys = shared[: len(self.SHARED_KEYS)]
        batch_args = shared[len(self.SHARED_KEYS) :]
        for keys, args in items:
            batch_keys += [keys[i] for i in self.OWN_KEYS]
            batch_args += [args[i] for i in self.OWN_ARGS]
        flat = await self.scripts.run(self.BATCH, batch_keys, batch_args)
        replies: list[Reply] = []
        i = 0
        while i < len(flat):
            size = self.REPLY_SIZE if flat[i] == 0 else 1
            replies.append(flat[i : i + size])
            i += size
        return replies


class GateChecks(StepBatch):
    """Step 1 (lua/gift_gate.lua, gift_gate_batch.lua): the gifts of one pass to one
    stream asked of its meta at once; the stream and its expected streamer are
    shared, the sender is a gift's."""

    ONE, BATCH = "gift_gate", "gift_gate_batch"
    SHARED_KEYS, OWN_KEYS = (0,), ()
    SHARED_ARGS, OWN_ARGS = (0,), (1,)
    REPLY_SIZE = 1


class StreamCredits(StepBatch):
    """Step 3 (lua/credit_stream.lua, credit_stream_batch.lua): the stream's meta,
    board, streaks, history and battle top are shared, the record is a transfer's;
    the combo window, the history cap, the channel and the record ttl are shared."""

    ONE, BATCH = "credit_stream", "credit_stream_batch"
    SHARED_KEYS, OWN_KEYS = (0, 1, 2, 3, 5), (4,)
    SHARED_ARGS, OWN_ARGS = (5, 6, 8, 9), (0, 1, 2, 3, 4, 7)
    REPLY_SIZE = 6
    ONE_MESSAGE = True
    MIN_BATCH = 4


class StreamerCredits(StepBatch):
    """Step 4 (lua/credit_streamer.lua, credit_streamer_batch.lua): the streamer's
    wallet, holds, platform account, day and all-time boards and journal are shared
    (so a day's transfers apart from the next day's), the record is a transfer's; the
    streamer and the record ttl are shared."""

    ONE, BATCH = "credit_streamer", "credit_streamer_batch"
    SHARED_KEYS, OWN_KEYS = (0, 1, 2, 3, 4, 5), (6,)
    SHARED_ARGS, OWN_ARGS = (1, 13), (0, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 14, 15)
    REPLY_SIZE = 3
    MIN_BATCH = 4
    one_pass = True


class OutboxClears(Window):
    """Step 5: a flush's transfers leave each outbox with one ZREM."""

    one_pass = True

    async def clear(self, outbox: str, transfer_id: str, options: RedisOptions) -> None:
        await self.answer(outbox, transfer_id, options)

    async def call(self, group: Hashable, items: list[Any]) -> list[Any]:
        outbox = str(group)
        removed = await self.scripts.command(outbox, "ZREM", outbox, *items)
        return [removed] * len(items)
