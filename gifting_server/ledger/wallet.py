"""The viewer's and streamer's money: sending gifts, budgets, balances, cash-outs.

`send_gift` is the one gift call: the HTTP endpoint and the WebSocket use it alike.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import orjson

from gifting_server.auth import Identity
from gifting_server.config import Gift, Settings
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys, streaks
from gifting_server.ledger.clock import DAY_MS, day_number, held_until
from gifting_server.ledger.store import Store, guarded
from gifting_server.ledger.streams import streamer_of


@dataclass(frozen=True)
class GiftReceipt:
    event_id: int
    coins: int  # the sender's balance after the gift
    combo: int
    replayed: bool


@dataclass(frozen=True)
class Cashout:
    cashout_id: str
    diamonds: int
    cents: int
    currency: str
    diamonds_left: int
    replayed: bool


def _event_fragment(sender: Identity, gift: Gift) -> str:
    """The sender and gift part of a gift event's JSON, spliced in by the script."""
    data = {
        "sender": {"id": sender.user_id, "name": sender.name},
        "gift": {"id": gift.id, "name": gift.name, "coins": gift.coins, "tier": gift.tier},
    }
    return orjson.dumps(data).decode()[1:-1] + ","


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
) -> GiftCall:
    limits = settings.limits
    return GiftCall(
        keys=[
            keys.idempotency(sender.user_id, idempotency_key),
            keys.wallet(sender.user_id),
            keys.stream(stream_id),
            keys.wallet(streamer),
            keys.held_diamonds(streamer),
            keys.PLATFORM_ACCOUNT,
            keys.stream_leaderboard(stream_id),
            keys.channel_leaderboard(streamer, "day", day_number(now)),
            keys.channel_leaderboard(streamer, "all"),
            keys.open_streaks(stream_id),
            keys.JOURNAL,
            keys.stream_history(stream_id),
        ],
        args=[
            sender.user_id,
            sender.name,
            streamer,
            gift.id,
            count,
            gift.coins * count,
            f"{stream_id}|{gift.id}|{count}",
            now,
            int(sender.adult),
            int(limits.require_age_verification),
            settings.economy.creator_share_bps,
            limits.combo_window_ms,
            limits.gift_rate_per_s,
            limits.gift_burst,
            limits.idempotency_ttl_s * 1000,
            settings.history.max_events,
            _event_fragment(sender, gift),
            keys.stream_channel(stream_id),
            idempotency_key,
            stream_id,
            held_until(now, settings.economy.holding_period_days * DAY_MS),
        ],
    )


async def send_gift(
    store: Store,
    sender: Identity,
    stream_id: str,
    gift: Gift,
    count: int,
    idempotency_key: str,
) -> GiftReceipt:
    streamer = await streamer_of(store, stream_id)
    call = gift_call(
        store.settings, sender, stream_id, streamer, gift, count, idempotency_key, store.clock()
    )
    result = await store.run_script("send_gift", call.keys, call.args)
    streaks.note_gift(store, stream_id)
    return GiftReceipt(int(result[1]), int(result[2]), int(result[3]), bool(result[4]))


async def set_daily_limit(store: Store, user_id: str, limit: int | None) -> int | None:
    await store.run_script(
        "set_daily_limit", [keys.wallet(user_id)], ["" if limit is None else limit]
    )
    return limit


WALLET_FIELDS = ("coins", "diamonds", "limit", "spent", "spent_day", "owed", "spent_before")


async def read_wallet(store: Store, user_id: str) -> dict[str, Any]:
    fields = await guarded(store.redis.hmget(keys.wallet(user_id), *WALLET_FIELDS))
    coins, diamonds, limit, spent, spent_day, owed, spent_before = (
        None if v is None else int(v) for v in fields
    )
    # send_gift keeps the coins spent on `spent_day` and on the day before it.
    today = day_number(store.clock())
    spent_today = 0
    if spent_day == today:
        spent_today = spent or 0
    elif spent_day == today + 1:
        spent_today = spent_before or 0
    return {
        "user_id": user_id,
        "coins": coins or 0,
        "diamonds": diamonds or 0,
        "spent_today": spent_today,
        "daily_limit": limit,
        "owed": owed or 0,
    }


async def read_holdings(store: Store, user_id: str) -> dict[str, Any]:
    """A streamer's diamonds still in their holding period, by release time (unix ms),
    soonest first, and the diamonds that can be cashed out now."""
    now, hold_ms = store.clock(), store.settings.economy.holding_period_days * DAY_MS
    async with store.redis.pipeline(transaction=True) as pipe:
        pipe.hget(keys.wallet(user_id), "diamonds")
        pipe.hgetall(keys.held_diamonds(user_id))
        pipe.hgetall(keys.earnings_by_day(user_id))
        diamonds, by_hour, by_day = await guarded(pipe.execute())
    until: dict[int, int] = {}
    for at, amount in by_hour.items():
        until[int(at)] = until.get(int(at), 0) + int(amount)
    if hold_ms > 0:  # kept by UTC day before holds were hourly: held to the day's end
        for day, amount in by_day.items():
            at = (int(day) + 1) * DAY_MS + hold_ms
            until[at] = until.get(at, 0) + int(amount)
    held = [{"diamonds": d, "until": at} for at, d in sorted(until.items()) if at > now and d]
    available = int(diamonds or 0) - sum(h["diamonds"] for h in held)
    return {"diamonds_available": max(available, 0), "diamonds_held": held}


def cents_for(store: Store, diamonds: int) -> int:
    economy = store.settings.economy
    if diamonds % economy.diamonds_per_unit:
        raise GiftingError(
            ErrorCode.INVALID_REQUEST,
            f"diamonds must be a multiple of {economy.diamonds_per_unit}",
        )
    return diamonds // economy.diamonds_per_unit * economy.cents_per_unit


async def cashout(store: Store, streamer_id: str, diamonds: int, idempotency_key: str) -> Cashout:
    economy, limits = store.settings.economy, store.settings.limits
    cents = cents_for(store, diamonds)
    result = await store.run_script(
        "cashout",
        keys=[
            keys.idempotency(streamer_id, idempotency_key),
            keys.wallet(streamer_id),
            keys.earnings_by_day(streamer_id),
            keys.cashouts(streamer_id),
            keys.JOURNAL,
            keys.held_diamonds(streamer_id),
        ],
        args=[
            streamer_id,
            diamonds,
            cents,
            f"cashout|{diamonds}",
            store.clock(),
            economy.cashout_min_diamonds,
            economy.cashout_daily_cap_cents,
            economy.holding_period_days * DAY_MS,
            limits.idempotency_ttl_s * 1000,
            f"co_{uuid.uuid4().hex}",
            economy.currency,
            idempotency_key,
        ],
    )
    return Cashout(
        cashout_id=str(result[1]),
        diamonds=int(result[2]),
        cents=int(result[3]),
        currency=economy.currency,
        diamonds_left=int(result[4]),
        replayed=bool(result[5]),
    )
