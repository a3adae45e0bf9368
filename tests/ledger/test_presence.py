"""Viewer presence: the stream's count is the sum of the workers' entries that have
not expired; an expired entry is dropped, a worker with no viewers removes its own."""

from __future__ import annotations

import orjson

from gifting_server.ledger import keys, presence
from gifting_server.ledger.store import Store
from tests.factories import live_stream
from tests.ledger.support import FakeClock

T0 = 1_704_283_200_000


def test_an_entry_reads_back_as_written() -> None:
    assert presence.parse_entry(presence.entry(12, T0)) == (12, T0)


async def test_the_count_sums_live_entries_and_drops_expired_ones(store: Store) -> None:
    store.clock = FakeClock(T0)
    await live_stream(store)
    key = keys.presence("s1")
    await store.redis.hset(key, "gone", presence.entry(5, T0 - 1))
    await store.redis.hset(key, "other", presence.entry(3, T0 + 1_000))

    assert await presence.publish_total(store, "me", "s1", 2) == 5
    assert set(await store.redis.hkeys(key)) == {"me", "other"}
    last = await store.redis.hget(keys.stream("s1"), "last_viewers")
    assert last == '"count":5'

    assert await presence.publish_total(store, "me", "s1", 0) == 3
    assert set(await store.redis.hkeys(key)) == {"other"}
    rows = await store.redis.xrange(keys.stream_history("s1"))
    counts = [orjson.loads(fields["e"])["count"] for _, fields in rows]
    assert counts[-2:] == [5, 3]
