"""Sending a gift: the one use case both edges call (HTTP and WebSocket).

`send_gift` applies the rules an edge cannot get wrong on its own (who may gift,
which gifts exist, how many at once, what a key looks like), then makes the one
script call that checks and moves the money (`lua/send_gift.lua`; on one Redis, with
the other gifts of its batching window: `gift_batch.py`). Each edge only
parses its request and encodes the receipt.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import orjson

from gifting_server.auth import Identity, Role
from gifting_server.config import Gift, Settings
from gifting_server.errors import ErrorCode, GiftingError, script_error
from gifting_server.fields import checked_key
from gifting_server.ledger import keys, messages, streaks, stream_settings, transfers
from gifting_server.ledger.clock import DAY_MS, day_number, held_until
from gifting_server.ledger.gift_admission import (
    GiftInFlight,
    Refused,
    StepAt,
    anywhere,
)
from gifting_server.ledger.gift_batch import GiftBatch
from gifting_server.ledger.store import Store, guarded
from gifting_server.ledger.streams import streamer_of


@dataclass(frozen=True)
class GiftReceipt:
    event_id: int
    coins: int  # the sender's balance after the gift
    combo: int
    replayed: bool


def event_fragment(
    sender: Identity, gift: Gift, *, message: str | None = None, test: bool = False
) -> str:
    """The sender and gift part of a gift event's JSON, spliced in by the script:
    with the gift's message (already moderated: `checked_message`) when it has one,
    and `test: true` for a test alert (ledger/alerts.py)."""
    data: dict[str, Any] = {
        "sender": {"id": sender.user_id, "name": sender.name},
        "gift": {"id": gift.id, "name": gift.name, "coins": gift.coins, "tier": gift.tier},
    }
    if message is not None:
        data["message"] = message
    if test:
        data["test"] = True
    return orjson.dumps(data).decode()[1:-1] + ","


def fingerprint(stream_id: str, gift_id: str, count: int, message: str | None = None) -> str:
    """What the idempotency record keeps of a request: the same key with another
    stream, gift, count or message is `idempotency_conflict`. The message counts as
    sent (controls out, trimmed), before the stream's settings mask any of it."""
    base = f"{stream_id}|{gift_id}|{count}"
    return base if message is None else f"{base}|m:{messages.digest(message)}"


@dataclass(frozen=True)
class Note:
    """A gift's message: as it counts for idempotency (`sent`) and as stored and shown."""

    sent: str
    shown: str


async def checked_message(
    store: Store, stream_id: str, gift: Gift, count: int, text: str | None
) -> Note | None:
    """The gift's message made fit to store, or None for none (absent, or empty once
    trimmed). Refused: `message_not_allowed` when the stream's messages are off or the
    send (count x coins) is below their minimum, `invalid_request` when it is longer
    than their maximum (in characters, after trimming)."""
    if text is None:
        return None
    sent = messages.cleaned(text)
    if not sent:
        return None
    rules = await stream_settings.settings_for(store, stream_id)
    if not rules.enabled:
        raise GiftingError(ErrorCode.MESSAGE_NOT_ALLOWED, "this stream does not take messages")
    if gift.coins * count < rules.min_coins:
        raise GiftingError(
            ErrorCode.MESSAGE_NOT_ALLOWED,
            f"a message needs a send of at least {rules.min_coins} coins on this stream",
        )
    if len(sent) > rules.max_length:
        raise GiftingError(
            ErrorCode.INVALID_REQUEST, f"message must be at most {rules.max_length} characters"
        )
    return Note(sent, messages.masked(sent, rules.blocked_words))


@dataclass(frozen=True)
class GiftCall:
    """The keys and arguments of one send_gift script call."""

    keys: list[str]
    args: list[Any]


def gift_call(
    settings: Settings,
    sender: Identity,
    stream_id: str,
    streamer: str,
    gift: Gift,
    count: int,
    idempotency_key: str,
    now: int,
    channel: str | None = None,
    note: Note | None = None,
) -> GiftCall:
    """`channel`: the script's publish argument, `Store.event_channel` (marked for
    SPUBLISH on a cluster); the stream's plain channel when not given."""
    limits = settings.limits
    return GiftCall(
        keys=[
            keys.idempotency(sender.user_id, idempotency_key),
            keys.wallet(sender.user_id),
            keys.stream(stream_id),
            keys.wallet(streamer),
            keys.held_diamonds(streamer),
            keys.platform_account(streamer),
            keys.stream_leaderboard(stream_id),
            keys.channel_leaderboard(streamer, "day", day_number(now)),
            keys.channel_leaderboard(streamer, "all"),
            keys.open_streaks(stream_id),
            keys.journal(streamer),
            keys.stream_history(stream_id),
            keys.battle_top(stream_id),
        ],
        args=[
            sender.user_id,
            sender.name,
            streamer,
            gift.id,
            count,
            gift.coins * count,
            fingerprint(stream_id, gift.id, count, note.sent if note else None),
            now,
            int(sender.adult),
            int(limits.require_age_verification),
            settings.economy.creator_share_bps,
            limits.combo_window_ms,
            limits.gift_rate_per_s,
            limits.gift_burst,
            limits.idempotency_ttl_s * 1000,
            settings.history.max_events,
            event_fragment(sender, gift, message=note.shown if note else None),
            channel or keys.stream_channel(stream_id),
            idempotency_key,
            stream_id,
            held_until(now, settings.economy.holding_period_days * DAY_MS),
        ],
    )


async def send_gift(
    store: Store,
    sender: Identity,
    stream_id: str,
    gift_id: str,
    count: int,
    idempotency_key: str,
    *,
    message: str | None = None,
    timed: Callable[[], AbstractContextManager[object]] = nullcontext,
) -> GiftReceipt:
    """Send `count` of the catalog's `gift_id` to the stream's streamer, once per key.

    Refused before anything is written: `forbidden` for any token but a viewer's,
    `unknown_gift`, `invalid_request` for a count or key out of the rules; then
    `checked_message`'s refusals; then every refusal of the script (see
    `errors.SCRIPT_ERRORS`). Before anything reaches Redis: `rate_limited` with
    `retry_after_ms` when the sender has `max_in_flight_per_user` gifts under way in
    this worker, `service_unavailable` with `retry_after_ms` past the ceiling of the
    worker (of a master the gift has a step on, on a cluster): `gift_admission.py`.
    `timed` wraps the script call alone: an edge's latency metric, which the rules'
    and the overload's refusals skip."""
    gift = checked_gift(store.settings, sender, gift_id, count, idempotency_key)
    with store.admission.user_turn(sender.user_id):
        note = await gift_note(store, sender, stream_id, gift, count, idempotency_key, message)
        with store.admission.admit(admitted_keys(sender, stream_id)) as in_flight:
            # The streamer's master, known once the stream's owner is read (a read):
            # asked before anything is written.
            in_flight.also(keys.wallet(await streamer_of(store, stream_id)))
            with timed():
                return await run_send_gift(
                    store,
                    sender,
                    stream_id,
                    gift,
                    count,
                    idempotency_key,
                    note=note,
                    in_flight=in_flight,
                )


async def gift_note(
    store: Store,
    sender: Identity,
    stream_id: str,
    gift: Gift,
    count: int,
    idempotency_key: str,
    message: str | None,
) -> Note | None:
    try:
        return await checked_message(store, stream_id, gift, count, message)
    except GiftingError:
        # The stream's settings may have changed since this key's gift was applied:
        # its retry still answers the first result (or a conflict), as any retry does.
        record = keys.idempotency(sender.user_id, idempotency_key)
        if message is None or not await guarded(store.scripts.command(record, "EXISTS", record)):
            raise
        sent = messages.cleaned(message)
        # The script answers from the record, unless it expired since the EXISTS: then
        # this is a new gift, and its message must not show a word blocked by now.
        rules = await stream_settings.settings_for(store, stream_id)
        return Note(sent, messages.masked(sent, rules.blocked_words))


def admitted_keys(sender: Identity, stream_id: str) -> list[str]:
    """The keys whose masters admit a gift before it starts: its first step reads the
    stream; on a cluster the sender's wallet is debited on its own master (the
    streamer's is asked once the stream's owner is known: `GiftInFlight.also`)."""
    return [keys.stream(stream_id), keys.wallet(sender.user_id)]


def admission_refused(store: Store, sender: Identity, stream_id: str) -> Refused | None:
    """How `send_gift` would refuse this gift now for load, asked ahead (counted): its
    code and retry_after_ms. The WebSocket edge asks before it starts a gift's task,
    so that a refusal is cheap."""
    admission = store.admission
    # On one Redis there is one account: no key's master to look up.
    keys = () if admission.only is not None else admitted_keys(sender, stream_id)
    return admission.refused_now(sender.user_id, keys)


def checked_gift(
    settings: Settings, sender: Identity, gift_id: str, count: int, idempotency_key: str
) -> Gift:
    sender.require(Role.VIEWER)
    gift = settings.gift(gift_id)
    if gift is None:
        raise GiftingError(ErrorCode.UNKNOWN_GIFT, f"no gift {gift_id!r} in the catalog")
    limit = settings.limits.max_gift_count
    if not 1 <= count <= limit:
        raise GiftingError(ErrorCode.INVALID_REQUEST, f"count must be between 1 and {limit}")
    checked_key(idempotency_key, "idempotency_key")
    return gift


async def run_send_gift(
    store: Store,
    sender: Identity,
    stream_id: str,
    gift: Gift,
    count: int,
    idempotency_key: str,
    *,
    note: Note | None = None,
    in_flight: GiftInFlight | None = None,
) -> GiftReceipt:
    """The script call alone, without the rules of `send_gift`: what the script's own
    tests and benchmarks drive (a count past the limit, say). `in_flight`: the gift's
    place in flight (`send_gift`), moved with the gift's steps across slots."""
    streamer = await streamer_of(store, stream_id)
    at = anywhere if in_flight is None else in_flight.at
    if store.gifts_across_slots:
        receipt = await _gift_across_slots(
            store, sender, stream_id, streamer, gift, count, idempotency_key, note, at
        )
    else:
        receipt = await _gift_in_one_script(
            store, sender, stream_id, streamer, gift, count, idempotency_key, note
        )
    streaks.note_gift(store, stream_id)  # this worker closes the streak, viewers or not
    return receipt


async def _gift_in_one_script(
    store: Store,
    sender: Identity,
    stream_id: str,
    streamer: str,
    gift: Gift,
    count: int,
    idempotency_key: str,
    note: Note | None,
) -> GiftReceipt:
    call = gift_call(
        store.settings,
        sender,
        stream_id,
        streamer,
        gift,
        count,
        idempotency_key,
        store.clock(),
        store.event_channel(stream_id),
        note,
    )
    # With the other gifts of this batching window, in one script call (gift_batch.py).
    sent = GiftBatch.of(store.scripts).send_gift(call.keys, call.args, store.settings.redis)
    result = await guarded(sent)
    if result[0] != 0:
        raise script_error(int(result[0]))
    return GiftReceipt(int(result[1]), int(result[2]), int(result[3]), bool(result[4]))


async def _gift_across_slots(
    store: Store,
    sender: Identity,
    stream_id: str,
    streamer: str,
    gift: Gift,
    count: int,
    idempotency_key: str,
    note: Note | None,
    at: StepAt,
) -> GiftReceipt:
    fragment = event_fragment(sender, gift, message=note.shown if note else None)
    debited, credited = await transfers.send_across_slots(
        store,
        sender,
        stream_id,
        streamer,
        gift,
        count,
        idempotency_key,
        fragment,
        fingerprint(stream_id, gift.id, count, note.sent if note else None),
        at=at,
    )
    return GiftReceipt(credited.event_id, debited.coins_left, credited.combo, debited.replayed)
