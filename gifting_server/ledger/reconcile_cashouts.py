"""The audit of failed cash-outs (`reconcile.py` replays the journal and calls this).

A `cashout` entry burns diamonds; a `cashout_failed` entry (lua/complete_cashout.lua)
mints them back. Each return must name a cash-out journaled before it for the same
streamer and the same diamonds, be the only return of it, and its stored record
(`{u:T}:cashouts`) must say `failed`: then a failed cash-out leaves the streamer
exactly where they were, and conservation still holds.
"""

from __future__ import annotations

from collections import Counter

import orjson

from gifting_server.ledger import keys
from gifting_server.ledger.store import RedisClient


class CashoutLegs:
    def __init__(self) -> None:
        self.journaled: dict[tuple[str, str], int] = {}  # (streamer, cash-out) -> diamonds
        self.returns: Counter[tuple[str, str]] = Counter()

    def paid_out(self, user: str, cashout_id: str, diamonds: int) -> None:
        self.journaled[(user, cashout_id)] = diamonds

    def returned(
        self, problems: list[str], entry_id: str, user: str, cashout_id: str, diamonds: int
    ) -> None:
        owned = (user, cashout_id)
        self.returns[owned] += 1
        if self.journaled.get(owned) != diamonds:
            problems.append(
                f"cash-out return: {entry_id} returns {diamonds} diamonds to {user} for "
                f"{cashout_id}, which journaled {self.journaled.get(owned)}"
            )
        if self.returns[owned] > 1:
            problems.append(f"cash-out return: {cashout_id} of {user} returned twice")

    async def check_records(self, redis: RedisClient, problems: list[str]) -> None:
        for user, cashout_id in sorted(self.returns):
            raw = await redis.hget(keys.cashouts(user), cashout_id)
            status = orjson.loads(raw).get("status") if raw else None
            if status != "failed":
                problems.append(
                    f"cash-out return: {cashout_id} of {user} was returned but its "
                    f"record says {status!r}"
                )
