"""What the ledger tests share: a clock the test moves, and a proof that a refused
call changed nothing."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pytest
from redis.asyncio import Redis

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger.store import Store

T0 = 1_704_283_200_000  # 2024-01-03 12:00 UTC, a Wednesday


class FakeClock:
    """Unix ms that only move when the test moves them."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


async def snapshot(redis: Redis) -> dict[str, tuple[bytes | None, bool]]:
    """Every key's DUMP and whether it carries a TTL: equal snapshots = nothing changed."""
    return {k: (await redis.dump(k), await redis.pttl(k) >= 0) for k in await redis.keys("*")}


async def assert_refused(store: Store, code: ErrorCode, call: Awaitable[Any]) -> None:
    before = await snapshot(store.redis)
    with pytest.raises(GiftingError) as refused:
        await call
    assert refused.value.code is code
    assert await snapshot(store.redis) == before
