"""What the ledger tests share: a clock the test moves, and a proof that a refused
call changed nothing."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import pytest

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys
from gifting_server.ledger.journal import records as journal_records
from gifting_server.ledger.store import Store
from tests.topology import AsyncClient, all_keys

T0 = 1_704_283_200_000  # 2024-01-03 12:00 UTC, a Wednesday


class FakeClock:
    """Unix ms that only move when the test moves them."""

    def __init__(self, now_ms: int) -> None:
        self.now = now_ms

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: int) -> None:
        self.now += ms


async def snapshot(redis: AsyncClient) -> dict[str, tuple[str, Any, bool]]:
    """Every key's type, content and whether it carries a TTL: equal snapshots =
    nothing changed. Content, not DUMP bytes: a read may advance a hash table's
    incremental rehash, which reorders its DUMP without changing anything."""
    found: dict[str, tuple[str, Any, bool]] = {}
    for key in await all_keys(redis):
        kind = await redis.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        found[key] = (kind, await _content(redis, key, kind), await redis.pttl(key) >= 0)
    return found


async def _content(redis: AsyncClient, key: str, kind: str) -> Any:
    if kind == "string":
        return await redis.get(key)
    if kind == "hash":
        return sorted((await redis.hgetall(key)).items())
    if kind == "zset":
        return await redis.zrange(key, 0, -1, withscores=True)
    if kind == "stream":
        return await redis.xrange(key)
    if kind == "set":
        return sorted(await redis.smembers(key))
    if kind == "list":
        return await redis.lrange(key, 0, -1)
    return await redis.dump(key)


async def assert_refused(store: Store, code: ErrorCode, call: Awaitable[Any]) -> None:
    before = await snapshot(store.redis)
    with pytest.raises(GiftingError) as refused:
        await call
    assert refused.value.code is code
    assert await snapshot(store.redis) == before


async def journal_entries(redis: AsyncClient) -> list[dict[str, str]]:
    """Every journal entry of every user's journal (and the legacy one), in entry-id
    order: what one journal held before the journal was split per user."""
    # A set: on a cluster that just failed over, a SCAN of every master may name a
    # key twice (the old master's view and the new one's).
    journals = {keys.LEGACY_JOURNAL}
    journals |= {key async for key in redis.scan_iter(match=keys.JOURNAL_PATTERN)}
    rows: list[tuple[tuple[int, int, int], str, dict[str, str]]] = []
    for journal in journals:
        for entry_id, fields in await redis.xrange(journal):
            ms, _, seq = entry_id.partition("-")
            for k, named in enumerate(journal_records(fields)):
                rows.append(((int(ms), int(seq), k), journal, named))
    return [fields for *_, fields in sorted(rows, key=lambda row: row[:2])]
