"""Closing streaks from the ledger side: a worker ends the streaks of the streams
it sent gifts to even when none of their viewers is on it."""

from __future__ import annotations

import uuid

import orjson

from gifting_server.ledger import gifts, keys, streaks
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import FakeClock

T0 = 1_704_283_200_000


async def streak_ends(store: Store) -> list[dict[str, object]]:
    rows = await store.redis.xrange(keys.stream_history("s1"))
    events = [orjson.loads(fields["e"]) for _, fields in rows]
    return [event for event in events if event.get("streak_end")]


async def test_a_stream_gifted_to_has_its_streak_closed_without_serving_it(store: Store) -> None:
    store.clock = clock = FakeClock(T0)
    await fund(store, "alice")
    await live_stream(store)
    rose = store.settings.gift("rose")
    assert rose is not None
    await gifts.run_send_gift(store, viewer("alice"), "s1", rose, 1, uuid.uuid4().hex)
    assert store.recent_gifts.streams() == {"s1"}

    await streaks.close_streaks(store, served=())
    assert await streak_ends(store) == []  # still within its quiet window
    clock.advance(store.settings.limits.combo_window_ms + 1)
    await streaks.close_streaks(store, served=())
    await streaks.close_streaks(store, served=())
    assert len(await streak_ends(store)) == 1


def test_a_gifted_stream_is_forgotten_after_its_streaks_surely_ended() -> None:
    recent = streaks.RecentGifts()
    recent.note("s1", window_ms=0)
    recent.note("s2", window_ms=60_000)
    recent.until["s1"] -= 2  # its deadline (window twice, plus a second) passed
    assert recent.streams() == {"s2"}
    assert recent.until.keys() == {"s2"}
