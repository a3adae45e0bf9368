"""A gift across slots: the steps a Redis Cluster runs instead of one send_gift script.

On a cluster the sender's wallet, the stream and the streamer's earnings live in
three slots, and a script may touch only one. So a gift is a transfer:

1. `gift_gate` (the stream's slot) reads the stream's rules: known, live, not one's
   own. It writes nothing; its verdict rides into the debit.
2. `debit_gift` (the sender's slot) checks the key, the verdict, the age rule and the
   wallet, then debits, adds the transfer to the outbox of that slot and keeps the
   transfer in the idempotency record. The gift is committed here.
3. `credit_stream` (the stream's slot): combo, board, history, publish — once per
   transfer, answering its first result when repeated.
4. `credit_streamer` (the streamer's slot): diamonds, platform share, boards,
   journal — once per transfer.
5. The transfer leaves the outbox.

A worker runs steps 1, 3, 4 and 5 of gifts that come while others of their stream,
streamer or outbox are under way together: one call a stream, a streamer or an
outbox (`transfer_batch.py`); the relay runs them a transfer at a time. The
client is answered after step 4. A worker that dies after step 2 leaves the
transfer in the outbox; the relay of any worker (`relay_transfers`) finishes it
once it is older than `[transfers] relay_after_ms`, and a retry with the same key
finishes it at once (the record holds the transfer).
docs/scaling.md, "A gift across slots", has the states and what each crash leaves.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson

from gifting_server.auth import Identity
from gifting_server.config import Gift
from gifting_server.errors import ErrorCode, GiftingError, script_error
from gifting_server.ledger import keys
from gifting_server.ledger.clock import DAY_MS, day_number, held_until
from gifting_server.ledger.gift_admission import StepAt, anywhere
from gifting_server.ledger.store import Store, guarded
from gifting_server.ledger.transfer_batch import (
    GateChecks,
    OutboxClears,
    StreamCredits,
    StreamerCredits,
)

log = logging.getLogger("gifting_server.transfers")

RELAY_BATCH = 100  # transfers finished per outbox and pass, at most


@dataclass(frozen=True)
class Transfer:
    """What the credits of one gift need, fixed when it is debited: the relay and a
    retry finish it with exactly these values (share, hold, day, event fragment)."""

    sender: str
    key: str
    stream: str
    streamer: str
    gift: str
    count: int
    coins: int
    at: int  # the debit's time, unix ms
    share_bps: int
    held_until: int
    fragment: str  # the sender and gift part of the gift event (gifts.event_fragment)
    adult: bool
    # Drawn at the debit. A key may be used again once its record expired (a new
    # gift), but the credited records outlive that record (they are written after it,
    # by the relay or a retry much later): they are named after this debit, not the key.
    nonce: str

    @property
    def id(self) -> str:
        # A sender id has no ":" (ids.ID_RULE), so the first one ends it.
        return f"{self.sender}:{self.key}"

    @property
    def credit_id(self) -> str:
        """What the credited records of this debit are named after (`keys.credited`)."""
        return f"{self.id}:{self.nonce}"

    def encoded(self) -> str:
        # orjson writes a dataclass's fields in their order, as `asdict` would give
        # them, without building the dict (asdict copies each value: ~4% of a gift's
        # worker CPU on a cluster).
        return orjson.dumps(self).decode()

    @classmethod
    def decoded(cls, text: str) -> Transfer:
        return cls(**orjson.loads(text))


@dataclass(frozen=True)
class Credited:
    event_id: int
    combo: int
    # The battle credit_stream counted the gift for, and when (that slot's TIME, unix
    # ms): what credit_streamer records in the journal entry ("" when none).
    battle: str = ""
    battle_at: str = ""


@dataclass(frozen=True)
class Debited:
    coins_left: int
    replayed: bool  # the key was seen before: `transfer` is the first request's
    daily_limit: str  # the sender's own, for the journal ("" when none)
    transfer: Transfer | None  # None: a gift send_gift made whole (`complete`)
    complete: Credited | None = None  # the result of that gift


async def send_across_slots(
    store: Store,
    sender: Identity,
    stream_id: str,
    streamer: str,
    gift: Gift,
    count: int,
    idempotency_key: str,
    fragment: str,
    fingerprint: str | None = None,
    *,
    at: StepAt = anywhere,
) -> tuple[Debited, Credited]:
    """Steps 1 to 5 for one gift. `at` is told each step's key before its call (the
    gift's place in flight follows it from master to master: `gift_admission.py`).
    Refused with nothing written once the store is closing: its steps would go after
    the close (`Store.close` waits for the gifts under way)."""
    if store.closing:
        raise GiftingError(
            ErrorCode.SERVICE_UNAVAILABLE, "this worker is shutting down; retry with the same key"
        )
    with store.transfers_under_way.held():
        debited = await debit(
            store,
            sender,
            stream_id,
            streamer,
            gift,
            count,
            idempotency_key,
            fragment,
            fingerprint,
            at=at,
        )
        if debited.transfer is None:
            assert debited.complete is not None
            return debited, debited.complete
        transfer, daily_limit = debited.transfer, debited.daily_limit
        return debited, await finish_batched(store, transfer, daily_limit, at=at)


async def debit(
    store: Store,
    sender: Identity,
    stream_id: str,
    streamer: str,
    gift: Gift,
    count: int,
    idempotency_key: str,
    fragment: str,
    fingerprint: str | None = None,
    *,
    at: StepAt = anywhere,
) -> Debited:
    """Steps 1 and 2: refused with nothing changed, or committed. `fingerprint`: the
    request's (gifts.fingerprint), "stream|gift|count" when not given."""
    settings = store.settings
    now = store.clock()
    at(keys.stream(stream_id))
    # With the other gifts of this pass to the stream (transfer_batch.py).
    gate = GateChecks.of(store.scripts)
    gate_call = [keys.stream(stream_id)], [streamer, sender.user_id]
    verdict = await guarded(gate.send(*gate_call, settings.redis))
    transfer = Transfer(
        sender=sender.user_id,
        key=idempotency_key,
        stream=stream_id,
        streamer=streamer,
        gift=gift.id,
        count=count,
        coins=gift.coins * count,
        at=now,
        share_bps=settings.economy.creator_share_bps,
        held_until=held_until(now, settings.economy.holding_period_days * DAY_MS),
        fragment=fragment,
        adult=sender.adult,
        nonce=secrets.token_hex(8),
    )
    limits = settings.limits
    at(keys.wallet(sender.user_id))
    result = await store.run_script(
        "debit_gift",
        [
            keys.idempotency(sender.user_id, idempotency_key),
            keys.wallet(sender.user_id),
            keys.outbox(sender.user_id),
        ],
        [
            sender.user_id,
            sender.name,
            fingerprint or f"{stream_id}|{gift.id}|{count}",
            transfer.coins,
            now,
            int(sender.adult),
            int(limits.require_age_verification),
            limits.gift_rate_per_s,
            limits.gift_burst,
            limits.idempotency_ttl_s * 1000,
            int(verdict[0]),
            transfer.id,
            transfer.encoded(),
        ],
    )
    replayed = bool(result[2])
    if replayed and not result[4]:
        # Made whole by send_gift on one Redis before the keys moved to a cluster.
        complete = Credited(int(result[5]), int(result[6]))
        return Debited(int(result[1]), True, "", None, complete)
    if replayed:
        transfer = Transfer.decoded(result[4])  # the first request's, to the letter
    return Debited(int(result[1]), replayed, str(result[3]), transfer)


async def finish(
    store: Store, transfer: Transfer, daily_limit: str, *, at: StepAt = anywhere
) -> Credited:
    """Steps 3 to 5 of a debited transfer; safe to repeat, in whole or in part."""
    at(keys.stream(transfer.stream))
    credited = await credit_stream(store, transfer)
    at(keys.wallet(transfer.streamer))
    await credit_streamer(store, transfer, credited, daily_limit)
    outbox = keys.outbox(transfer.sender)
    at(outbox)
    await guarded(store.scripts.command(outbox, "ZREM", outbox, transfer.id))
    return credited


async def finish_batched(
    store: Store, transfer: Transfer, daily_limit: str, *, at: StepAt = anywhere
) -> Credited:
    """Steps 3 to 5 as `finish`, each with the other transfers of this flush that
    share its stream, its streamer or its outbox (transfer_batch.py): what a worker
    runs for the transfers it debits. A call that fails leaves the transfer credited
    or not at all, in the outbox, for a retry or the relay."""
    options = store.settings.redis
    at(keys.stream(transfer.stream))
    stream_call = credit_stream_call(store, transfer)
    reply = await guarded(StreamCredits.of(store.scripts).send(*stream_call, options))
    credited = _credited(reply)
    at(keys.wallet(transfer.streamer))
    streamer_call = credit_streamer_call(store, transfer, credited, daily_limit)
    reply = await guarded(StreamerCredits.of(store.scripts).send(*streamer_call, options))
    if reply[0] != 0:
        raise script_error(int(reply[0]))
    outbox = keys.outbox(transfer.sender)
    at(outbox)
    await guarded(OutboxClears.of(store.scripts).clear(outbox, transfer.id, options))
    return credited


def _credited(reply: list[Any]) -> Credited:
    """credit_stream's reply as the transfer's `Credited`, or its code raised."""
    if reply[0] != 0:
        raise script_error(int(reply[0]))
    return Credited(int(reply[1]), int(reply[2]), str(reply[4]), str(reply[5]))


async def credit_stream(store: Store, transfer: Transfer) -> Credited:
    """Step 3: the gift on its stream, once per transfer."""
    return _credited(
        await guarded(store.scripts.run("credit_stream", *credit_stream_call(store, transfer)))
    )


def credit_stream_call(store: Store, transfer: Transfer) -> tuple[list[str], list[Any]]:
    """credit_stream's keys and arguments for this transfer."""
    settings = store.settings
    stream = transfer.stream
    return (
        [
            keys.stream(stream),
            keys.stream_leaderboard(stream),
            keys.open_streaks(stream),
            keys.stream_history(stream),
            keys.credited(keys.stream(stream), transfer.credit_id),
            keys.battle_top(stream),
        ],
        [
            transfer.sender,
            transfer.gift,
            transfer.count,
            transfer.coins,
            transfer.at,
            settings.limits.combo_window_ms,
            settings.history.max_events,
            transfer.fragment,
            store.event_channel(stream),
            settings.limits.idempotency_ttl_s * 1000,
        ],
    )


async def credit_streamer(
    store: Store, transfer: Transfer, credited: Credited, daily_limit: str
) -> None:
    """Step 4: the streamer's earnings and the journal entry, once per transfer, as
    the relay's pass runs it: the keys it writes unread are checked first, since the
    relay tries a failed transfer again each pass (credit_streamer.lua, ARGV[17])."""
    script_keys, args = credit_streamer_call(store, transfer, credited, daily_limit)
    await store.run_script("credit_streamer", script_keys, [*args, 1])


def credit_streamer_call(
    store: Store, transfer: Transfer, credited: Credited, daily_limit: str
) -> tuple[list[str], list[Any]]:
    """credit_streamer's keys and arguments for this transfer."""
    streamer = transfer.streamer
    return (
        [
            keys.wallet(streamer),
            keys.held_diamonds(streamer),
            keys.platform_account(streamer),
            keys.channel_leaderboard(streamer, "day", day_number(transfer.at)),
            keys.channel_leaderboard(streamer, "all"),
            keys.journal(streamer),
            keys.credited(keys.wallet(streamer), transfer.credit_id),
        ],
        [
            transfer.sender,
            streamer,
            transfer.stream,
            transfer.gift,
            transfer.count,
            transfer.coins,
            transfer.share_bps,
            transfer.held_until,
            transfer.at,
            credited.event_id,
            transfer.key,
            daily_limit,
            int(transfer.adult),
            store.settings.limits.idempotency_ttl_s * 1000,
            credited.battle,
            credited.battle_at,
        ],
    )


async def relay_transfers(store: Store, slots: Sequence[int], older_than_ms: int) -> int:
    """Finish every transfer debited before `older_than_ms` (unix ms) in the outboxes
    of `slots`: those of a worker that died between the debit and the credits. Returns
    how many were finished. One that cannot be (its record expired or unreadable, a
    corrupt key) is logged and left in the outbox, where `reconcile` reports it, behind
    the others: a full batch of those must not hide a transfer that can finish."""
    command = store.scripts.command
    outboxes = [keys.outbox_of_slot(slot) for slot in slots]
    answers = await store.scripts.commands(
        [
            (slot, ("ZRANGEBYSCORE", outbox, "-inf", older_than_ms, "LIMIT", 0, RELAY_BATCH))
            for slot, outbox in zip(slots, outboxes, strict=True)
        ]
    )
    failed = next((a for a in answers if isinstance(a, BaseException)), None)
    if failed is not None:
        await guarded(_raise(failed))
    pending = cast(list[list[str]], answers)
    finished = 0
    for outbox, members in zip(outboxes, pending, strict=True):
        for transfer_id in members:
            if await _finish_pending(store, transfer_id):
                finished += 1
            else:
                # Last in line, read again once relay_after_ms passed. XX: never brings
                # back one a worker finished meanwhile. The score is only the relay's.
                requeue = ("ZADD", outbox, "XX", store.clock(), transfer_id)
                await guarded(command(outbox, *requeue))
    return finished


async def _raise(error: BaseException) -> None:
    raise error


async def _finish_pending(store: Store, transfer_id: str) -> bool:
    """False when the transfer cannot be finished now; raises only when the sender's
    master cannot be reached, which ends the pass. A credit side that is unavailable
    (its master failing over, its replicas short) holds up only its own transfers:
    the requeue, on the sender's master, tells whether the pass can go on."""
    sender, _, key = transfer_id.partition(":")
    read = False
    try:
        record = await guarded(store.redis.get(keys.idempotency(sender, key)))
        read = True
        parts = str(record).split("\n", 3) if record is not None else []
        if len(parts) != 4:
            log.error(
                "gift transfer %s cannot be finished: its record is gone or unreadable; "
                "its coins stay debited (reconcile reports it)",
                transfer_id,
            )
            return False
        await finish(store, Transfer.decoded(parts[3]), parts[2])
    except GiftingError as e:
        if e.code is ErrorCode.SERVICE_UNAVAILABLE:
            if not read:
                raise
            log.warning("gift transfer %s cannot be finished now: %s", transfer_id, e)
            return False
        log.error("gift transfer %s cannot be finished: %s", transfer_id, e)
        return False
    except (ValueError, TypeError) as e:  # a record's transfer that is not one
        log.error(
            "gift transfer %s cannot be finished: its record is unreadable: %s", transfer_id, e
        )
        return False
    log.info("finished gift transfer %s, left behind by a worker", transfer_id)
    return True


class TransferRelay:
    """Walks the slots' outboxes a window at a time (`[transfers]`
    relay_slots_per_pass), from a random start so that workers spread over the
    slots: with the defaults, all 16,384 in 16 passes, 16 s; with W workers a slot
    is read every 16 / W s on average. A transfer is taken for abandoned once older
    than relay_after_ms: a live worker finishes its own within a round trip per step."""

    def __init__(self, store: Store, start: int) -> None:
        self.store = store
        self.next_slot = start % keys.SLOTS

    async def pass_once(self) -> None:
        config = self.store.settings.transfers
        first, size = self.next_slot, config.relay_slots_per_pass
        slots = [(first + i) % keys.SLOTS for i in range(size)]
        self.next_slot = (first + size) % keys.SLOTS
        await relay_transfers(self.store, slots, self.store.clock() - config.relay_after_ms)
