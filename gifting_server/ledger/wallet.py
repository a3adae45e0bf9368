"""The viewer's and streamer's money at rest: budgets, balances, holdings, cash-outs.

Spending it on gifts is `ledger/gifts.py`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import cashouts, keys
from gifting_server.ledger.clock import DAY_MS, day_number
from gifting_server.ledger.store import Store, guarded


@dataclass(frozen=True)
class Cashout:
    cashout_id: str
    diamonds: int
    cents: int
    currency: str
    diamonds_left: int
    replayed: bool


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
            keys.journal(streamer_id),
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
            cashouts.new_cashout_id(streamer_id),
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
