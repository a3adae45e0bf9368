"""start_stream.lua and end_stream.lua through `streams`, and the four leaderboards."""

from __future__ import annotations

import re
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import orjson
import pytest

import gifting_server
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, streams
from gifting_server.ledger.clock import DAY_MS
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import FakeClock, assert_refused, snapshot
from tests.topology import Subscription

T0 = 1_704_283_200_000  # 2024-01-03 12:00 UTC, a Wednesday
NEXT_MONDAY = T0 + 5 * DAY_MS - DAY_MS // 2  # 2024-01-08 00:00 UTC


async def assert_unchanged(store: Store, call: Awaitable[Any]) -> Any:
    before = await snapshot(store.redis)
    result = await call
    assert await snapshot(store.redis) == before
    return result


async def gift(store: Store, sender: str, gift_id: str, stream: str = "s1", count: int = 1) -> int:
    item = store.settings.gift(gift_id)
    assert item is not None
    who = viewer(sender, name=f"{sender.title()} A.")
    receipt = await gifts.run_send_gift(
        store, who, stream, item, count, f"{sender}-{store.clock()}"
    )
    return receipt.event_id


async def history(store: Store, stream_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await store.redis.xrange(keys.stream_history(stream_id))
    return [(event_id, orjson.loads(fields["e"])) for event_id, fields in rows]


@pytest.fixture
def clock(store: Store) -> FakeClock:
    store.clock = fake = FakeClock(T0)
    return fake


# --- start_stream ------------------------------------------------------------------------


async def test_start_stream_creates_a_live_stream_owned_by_the_streamer(
    store: Store, clock: FakeClock
) -> None:
    assert await streams.start_stream(store, "streamer1", "s1") is True
    assert await store.redis.hgetall(keys.stream("s1")) == {
        "streamer": "streamer1", "status": "live", "started_at": str(T0), "seq": "0",
    }  # fmt: skip
    assert await streams.stream_status(store, "s1") == {
        "stream_id": "s1", "streamer_id": "streamer1", "streamer_name": "streamer1",
        "status": "live", "coins_total": 0, "alerts_paused": False, "goal": None,
        "battle_id": None,
    }  # fmt: skip


async def test_start_stream_on_an_already_live_stream_answers_false_and_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await live_stream(store)
    clock.advance(1000)
    assert await assert_unchanged(store, streams.start_stream(store, "streamer1", "s1")) is False


async def test_start_stream_reopens_own_ended_stream_and_event_ids_keep_counting(
    store: Store, clock: FakeClock
) -> None:
    for user in ("alice", "bob"):
        await fund(store, user)
    await live_stream(store)
    assert await gift(store, "alice", "rose") == 1
    assert await streams.end_stream(store, "streamer1", "s1") == 2
    clock.advance(60_000)
    assert await streams.start_stream(store, "streamer1", "s1") is True
    meta = await store.redis.hgetall(keys.stream("s1"))
    assert (meta["status"], meta["started_at"], meta["seq"]) == ("live", str(clock.now), "2")
    assert await gift(store, "bob", "rose") == 3  # bob: no earlier streak of his to close
    events = await history(store, "s1")
    assert [(i, e["kind"]) for i, e in events] == [
        ("1-0", "gift"), ("2-0", "stream_ended"), ("3-0", "gift"),
    ]  # fmt: skip


@pytest.mark.parametrize("ended", [False, True], ids=["live", "ended"])
async def test_start_stream_on_another_streamers_id_is_taken_and_changes_nothing(
    store: Store, clock: FakeClock, ended: bool
) -> None:
    await live_stream(store)
    if ended:
        await streams.end_stream(store, "streamer1", "s1")
    await assert_refused(
        store, ErrorCode.STREAM_ID_TAKEN, streams.start_stream(store, "intruder", "s1")
    )


async def test_start_stream_over_a_wrong_typed_meta_is_storage_corrupt(
    store: Store, clock: FakeClock
) -> None:
    await store.redis.set(keys.stream("s1"), "planted")
    await assert_refused(
        store, ErrorCode.STORAGE_CORRUPT, streams.start_stream(store, "streamer1", "s1")
    )


# --- end_stream ----------------------------------------------------------------------------


async def test_end_stream_marks_it_ended_and_appends_and_publishes_stream_ended(
    store: Store, clock: FakeClock
) -> None:
    await fund(store, "alice")
    await live_stream(store)
    await gift(store, "alice", "rose")
    channel = await Subscription.open(store.redis, keys.stream_channel("s1"))
    clock.advance(5000)

    assert await streams.end_stream(store, "streamer1", "s1") == 2

    meta = await store.redis.hgetall(keys.stream("s1"))
    assert (meta["status"], meta["seq"], meta["ended_at"]) == ("ended", "2", str(clock.now))
    assert (await streams.stream_status(store, "s1"))["status"] == "ended"
    *_, (event_id, event) = await history(store, "s1")
    assert (event_id, event) == ("2-0", {"event_id": 2, "kind": "stream_ended", "ts": clock.now})
    published = await channel.next(timeout_s=1.0)
    assert published is not None and orjson.loads(published["data"]) == event
    await channel.aclose()


async def test_end_stream_on_an_ended_stream_answers_zero_and_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await live_stream(store)
    await streams.end_stream(store, "streamer1", "s1")
    clock.advance(1000)
    assert await assert_unchanged(store, streams.end_stream(store, "streamer1", "s1")) == 0


async def test_end_stream_of_an_unknown_stream_is_refused(store: Store, clock: FakeClock) -> None:
    await live_stream(store)
    await assert_refused(
        store, ErrorCode.UNKNOWN_STREAM, streams.end_stream(store, "streamer1", "nope")
    )


async def test_end_stream_by_someone_else_is_refused(store: Store, clock: FakeClock) -> None:
    await live_stream(store)
    await assert_refused(
        store, ErrorCode.NOT_STREAM_OWNER, streams.end_stream(store, "intruder", "s1")
    )


async def test_end_stream_over_a_wrong_typed_history_is_storage_corrupt_and_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await live_stream(store)
    await store.redis.set(keys.stream_history("s1"), "planted")
    await assert_refused(
        store, ErrorCode.STORAGE_CORRUPT, streams.end_stream(store, "streamer1", "s1")
    )
    assert (await streams.stream_status(store, "s1"))["status"] == "live"


async def test_end_stream_over_a_wrong_typed_meta_is_storage_corrupt(
    store: Store, clock: FakeClock
) -> None:
    await store.redis.set(keys.stream("s1"), "planted")
    await assert_refused(
        store, ErrorCode.STORAGE_CORRUPT, streams.end_stream(store, "streamer1", "s1")
    )


# --- leaderboards --------------------------------------------------------------------------


def board(*rows: tuple[str, int]) -> list[dict[str, Any]]:
    return [
        {"rank": rank, "user_id": user, "name": f"{user.title()} A.", "coins": coins}
        for rank, (user, coins) in enumerate(rows, start=1)
    ]


async def test_leaderboards_rank_gifters_per_stream_day_week_and_all_time(
    store: Store, clock: FakeClock
) -> None:
    for user in ("alice", "bob"):
        await fund(store, user, "coins_1000")
    await live_stream(store, "s1")
    await gift(store, "alice", "doughnut")  # 30
    await gift(store, "bob", "hand_hearts")  # 100
    clock.advance(10)
    await gift(store, "alice", "finger_heart")  # 5
    await streams.end_stream(store, "streamer1", "s1")
    wednesday = board(("bob", 100), ("alice", 35))
    for period in streams.PERIODS:
        assert await streams.leaderboard(store, "s1", period, 10) == wednesday

    clock.advance(DAY_MS)  # Thursday, a new stream of the same streamer
    await live_stream(store, "s2")
    await gift(store, "alice", "cap", "s2")  # 99
    assert await streams.leaderboard(store, "s2", "stream", 10) == board(("alice", 99))
    assert await streams.leaderboard(store, "s1", "stream", 10) == wednesday
    for stream_id in ("s1", "s2"):  # channel boards belong to the streamer, not the stream
        assert await streams.leaderboard(store, stream_id, "day", 10) == board(("alice", 99))
        assert await streams.leaderboard(store, stream_id, "week", 10) == board(
            ("alice", 134), ("bob", 100)
        )
        assert await streams.leaderboard(store, stream_id, "all", 10) == board(
            ("alice", 134), ("bob", 100)
        )
    assert await streams.leaderboard(store, "s2", "day", 10, now_ms=T0) == wednesday
    assert await streams.leaderboard(store, "s2", "all", 1) == board(("alice", 134))

    clock.now = NEXT_MONDAY
    assert await streams.leaderboard(store, "s2", "day", 10) == []
    assert await streams.leaderboard(store, "s2", "week", 10) == []
    assert await streams.leaderboard(store, "s2", "all", 10) == board(("alice", 134), ("bob", 100))


async def test_leaderboard_of_an_unknown_stream_is_refused(store: Store, clock: FakeClock) -> None:
    for period in streams.PERIODS:
        with pytest.raises(GiftingError) as refused:
            await streams.leaderboard(store, "nope", period, 10)
        assert refused.value.code is ErrorCode.UNKNOWN_STREAM


async def test_day_boards_expire_after_the_end_of_their_week(
    store: Store, clock: FakeClock
) -> None:
    """A week's board is the sum of its day boards, so each day board must outlive
    the week it belongs to (a Monday's by 7 days), and then go."""
    await fund(store, "alice")
    await live_stream(store)
    await gift(store, "alice", "rose")
    day_board = keys.channel_leaderboard("streamer1", "day", T0 // DAY_MS)
    assert 7 * DAY_MS < await store.redis.pttl(day_board) <= 9 * DAY_MS
    assert await store.redis.pttl(keys.channel_leaderboard("streamer1", "all")) == -1


async def test_end_stream_after_meta_was_lost_and_recreated_never_half_applies(
    store: Store, clock: FakeClock
) -> None:
    """Meta evicted or deleted, the streamer goes live again: seq restarts at 0 while the
    history still ends at 2-0, so the script's XADD of stream_ended 1-0 would be refused."""
    await fund(store, "alice")
    await live_stream(store)
    await gift(store, "alice", "rose")
    clock.advance(1)
    await gift(store, "alice", "rose")
    await store.redis.delete(keys.stream("s1"))
    assert await streams.start_stream(store, "streamer1", "s1") is True
    before = await snapshot(store.redis)
    try:
        event_id = await streams.end_stream(store, "streamer1", "s1")
    except GiftingError as refused:  # refusing is fine, if nothing was written
        assert refused.code is ErrorCode.STORAGE_CORRUPT
        assert await snapshot(store.redis) == before
    else:  # ending is fine, if its event id stays unique in the history
        assert event_id > 2
        assert await store.redis.xlen(keys.stream_history("s1")) == 3


def test_the_leaderboard_overlay_offers_exactly_the_periods() -> None:
    script = (Path(gifting_server.__file__).parent / "overlay" / "leaderboard.js").read_text()
    labels = re.search(r"const PERIOD_LABEL = \{(.*?)\};", script, re.S)
    assert labels is not None, "overlay/leaderboard.js has no PERIOD_LABEL"
    assert tuple(re.findall(r"(\w+): \"", labels.group(1))) == streams.PERIODS
