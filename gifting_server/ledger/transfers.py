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

The client is answered after step 4. A worker that dies after step 2 leaves the
transfer in the outbox; the relay of any worker (`relay_transfers`) finishes it
once it is older than `RELAY_AFTER_MS`, and a retry with the same key finishes it
at once (the record holds the transfer). docs/scaling.md, "A gift across slots",
has the states and what each crash leaves.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import orjson

from gifting_server.auth import Identity
from gifting_server.config import Gift
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys
from gifting_server.ledger.clock import DAY_MS, day_number, held_until
from gifting_server.ledger.store import Store, guarded

log = logging.getLogger("gifting_server.transfers")

# A transfer this old is taken for abandoned (its worker died) and finished by the
# relay. A live worker finishes its own within one round trip per step.
RELAY_AFTER_MS = 5_000
RELAY_EVERY_S = 1.0
# Slots whose outbox one relay pass reads: all 16384 in 16 passes (16 s at one pass a
# second); with W workers, a slot is read every 16 / W s on average.
RELAY_SLOTS_PER_PASS = keys.SLOTS // 16
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

    @property
    def id(self) -> str:
        # A sender id has no ":" (ids.ID_RULE), so the first one ends it.
        return f"{self.sender}:{self.key}"

    def encoded(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def decoded(cls, text: str) -> Transfer:
        return cls(**orjson.loads(text))


@dataclass(frozen=True)
class Debited:
    coins_left: int
    replayed: bool  # the key was seen before: `transfer` is the first request's
    daily_limit: str  # the sender's own, for the journal ("" when none)
    transfer: Transfer


@dataclass(frozen=True)
class Credited:
    event_id: int
    combo: int


async def send_across_slots(
    store: Store,
    sender: Identity,
    stream_id: str,
    streamer: str,
    gift: Gift,
    count: int,
    idempotency_key: str,
    fragment: str,
) -> tuple[Debited, Credited]:
    """Steps 1 to 5 for one gift."""
    debited = await debit(
        store, sender, stream_id, streamer, gift, count, idempotency_key, fragment
    )
    return debited, await finish(store, debited.transfer, debited.daily_limit)


async def debit(
    store: Store,
    sender: Identity,
    stream_id: str,
    streamer: str,
    gift: Gift,
    count: int,
    idempotency_key: str,
    fragment: str,
) -> Debited:
    """Steps 1 and 2: refused with nothing changed, or committed."""
    settings = store.settings
    now = store.clock()
    verdict = await guarded(
        store.scripts.run("gift_gate", [keys.stream(stream_id)], [streamer, sender.user_id])
    )
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
    )
    limits = settings.limits
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
            f"{stream_id}|{gift.id}|{count}",
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
    if replayed:
        transfer = Transfer.decoded(result[4])  # the first request's, to the letter
    return Debited(int(result[1]), replayed, str(result[3]), transfer)


async def finish(store: Store, transfer: Transfer, daily_limit: str) -> Credited:
    """Steps 3 to 5 of a debited transfer; safe to repeat, in whole or in part."""
    credited = await credit_stream(store, transfer)
    await credit_streamer(store, transfer, credited.event_id, daily_limit)
    await guarded(store.redis.zrem(keys.outbox(transfer.sender), transfer.id))
    return credited


async def credit_stream(store: Store, transfer: Transfer) -> Credited:
    """Step 3: the gift on its stream, once per transfer."""
    settings = store.settings
    stream = transfer.stream
    result = await store.run_script(
        "credit_stream",
        [
            keys.stream(stream),
            keys.stream_leaderboard(stream),
            keys.open_streaks(stream),
            keys.stream_history(stream),
            keys.credited(keys.stream(stream), transfer.id),
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
    return Credited(int(result[1]), int(result[2]))


async def credit_streamer(
    store: Store, transfer: Transfer, event_id: int, daily_limit: str
) -> None:
    """Step 4: the streamer's earnings and the journal entry, once per transfer."""
    streamer = transfer.streamer
    await store.run_script(
        "credit_streamer",
        [
            keys.wallet(streamer),
            keys.held_diamonds(streamer),
            keys.platform_account(streamer),
            keys.channel_leaderboard(streamer, "day", day_number(transfer.at)),
            keys.channel_leaderboard(streamer, "all"),
            keys.journal(streamer),
            keys.credited(keys.wallet(streamer), transfer.id),
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
            event_id,
            transfer.key,
            daily_limit,
            int(transfer.adult),
            store.settings.limits.idempotency_ttl_s * 1000,
        ],
    )


async def relay_transfers(store: Store, slots: Sequence[int], older_than_ms: int) -> int:
    """Finish every transfer debited before `older_than_ms` (unix ms) in the outboxes
    of `slots`: those of a worker that died between the debit and the credits. Returns
    how many were finished. One that cannot be (its record expired, a corrupt key) is
    logged and left in the outbox, where `reconcile` reports it."""
    outboxes = [keys.outbox_of_slot(slot) for slot in slots]
    async with store.redis.pipeline(transaction=False) as pipe:
        for outbox in outboxes:
            pipe.zrangebyscore(outbox, "-inf", older_than_ms, start=0, num=RELAY_BATCH)
        pending: list[list[str]] = await guarded(pipe.execute())
    finished = 0
    for transfer_id in (member for members in pending for member in members):
        if await _finish_pending(store, transfer_id):
            finished += 1
    return finished


async def _finish_pending(store: Store, transfer_id: str) -> bool:
    sender, _, key = transfer_id.partition(":")
    record = await guarded(store.redis.get(keys.idempotency(sender, key)))
    parts = str(record).split("\n", 3) if record is not None else []
    if len(parts) != 4:
        log.error(
            "gift transfer %s cannot be finished: its record is gone or unreadable; "
            "its coins stay debited (reconcile reports it)",
            transfer_id,
        )
        return False
    try:
        await finish(store, Transfer.decoded(parts[3]), parts[2])
    except GiftingError as e:
        if e.code is ErrorCode.SERVICE_UNAVAILABLE:
            raise
        log.error("gift transfer %s cannot be finished: %s", transfer_id, e)
        return False
    log.info("finished gift transfer %s, left behind by a worker", transfer_id)
    return True


class TransferRelay:
    """Walks the slots' outboxes a window at a time, from a random start so that
    workers spread over the slots."""

    def __init__(self, store: Store, start: int) -> None:
        self.store = store
        self.next_slot = start % keys.SLOTS

    async def pass_once(self) -> None:
        first = self.next_slot
        slots = [(first + i) % keys.SLOTS for i in range(RELAY_SLOTS_PER_PASS)]
        self.next_slot = (first + RELAY_SLOTS_PER_PASS) % keys.SLOTS
        await relay_transfers(self.store, slots, self.store.clock() - RELAY_AFTER_MS)
