"""send_gift.lua through `gifts.run_send_gift`: the happy path, every return code, and
the rule that a refused or failed gift changes nothing at all."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import orjson
import pytest

from gifting_server.auth import Identity
from gifting_server.config import MAX_INT, CoinPackage, Gift
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, reconcile, streams, wallet
from gifting_server.ledger.clock import DAY_MS, day_number
from gifting_server.ledger.journal import fields as journal_fields
from gifting_server.ledger.store import Store
from tests.conftest import make_settings
from tests.factories import fund, live_stream, viewer
from tests.ledger.conftest import one_script_only
from tests.ledger.support import FakeClock, assert_refused, snapshot
from tests.ledger.test_concurrency import assert_reconciled
from tests.topology import Subscription

T0 = 1_704_283_200_000  # 2024-01-03 12:00 UTC, a Wednesday


def with_config(store: Store, clock: FakeClock, **sections: dict[str, Any]) -> Store:
    base = store.settings
    settings = make_settings(str(base.redis_url), base.data_dir, **sections)
    return Store(store.redis, settings, clock=clock)


async def send(
    store: Store,
    gift_id: str = "rose",
    count: int = 1,
    *,
    who: Identity | None = None,
    stream: str = "s1",
    key: str | None = None,
) -> gifts.GiftReceipt:
    gift = store.settings.gift(gift_id)
    assert gift is not None
    sender = who or viewer("alice")
    return await gifts.run_send_gift(store, sender, stream, gift, count, key or uuid.uuid4().hex)


async def balances(store: Store) -> tuple[int, int, int]:
    """(alice's coins, streamer1's diamonds, platform coins)."""
    alice = await wallet.read_wallet(store, "alice")
    streamer = await wallet.read_wallet(store, "streamer1")
    platform = await store.redis.hget(keys.platform_account("streamer1"), "coins")
    return alice["coins"], streamer["diamonds"], int(platform or 0)


@pytest.fixture
def clock(store: Store) -> FakeClock:
    store.clock = fake = FakeClock(T0)
    return fake


@pytest.fixture
async def live(store: Store, clock: FakeClock) -> str:
    """alice holds 100 coins; stream s1 of streamer1 is live."""
    await fund(store, "alice")
    return await live_stream(store)


# --- happy path ------------------------------------------------------------------------


async def test_gift_debits_sender_credits_streamer_and_platform_and_records_everything(
    store: Store, live: str
) -> None:
    channel = await Subscription.open(store.redis, keys.stream_channel("s1"))

    receipt = await send(store, "finger_heart", 3, key="k1")

    assert receipt == gifts.GiftReceipt(event_id=1, coins=85, combo=3, replayed=False)
    assert await balances(store) == (85, 7, 8)  # 15 coins: floor(7.5) diamonds, 8 platform
    assert (await wallet.read_wallet(store, "alice"))["spent_today"] == 15
    held_until = T0 + store.settings.economy.holding_period_days * DAY_MS  # T0: a whole hour
    assert await store.redis.hgetall(keys.held_diamonds("streamer1")) == {str(held_until): "7"}
    meta = await store.redis.hgetall(keys.stream("s1"))
    assert (meta["seq"], meta["coins"]) == ("1", "15")
    *_, (_, entry) = await store.redis.xrange(keys.journal("streamer1"))
    assert entry == {"g": f"alice|streamer1|s1|finger_heart|3|15|7|8|5000|1|{T0}|||k1"}
    assert journal_fields(entry) == {
        "type": "gift", "user": "alice", "to": "streamer1", "stream": "s1",
        "gift": "finger_heart", "count": "3", "coins": "15", "diamonds": "7",
        "platform": "8", "share": "5000", "event_id": "1", "key": "k1", "at": str(T0),
    }  # fmt: skip
    [(event_id, fields)] = await store.redis.xrange(keys.stream_history("s1"))
    assert event_id == "1-0"
    assert orjson.loads(fields["e"]) == {
        "event_id": 1, "kind": "gift", "ts": T0,
        "sender": {"id": "alice", "name": "Alice"},
        "gift": {"id": "finger_heart", "name": "Finger Heart", "coins": 5, "tier": 1},
        "count": 3, "combo": 3, "streak_end": False, "coins_total": 15,
    }  # fmt: skip
    published = await channel.next(timeout_s=1.0)
    assert published is not None and published["data"] == fields["e"]
    await channel.aclose()
    assert await store.redis.zscore(keys.open_streaks("s1"), "alice:finger_heart") == T0 + 3000


# --- diamonds: no rounding loss ------------------------------------------------------------


async def test_single_roses_at_half_share_give_diamonds_0_1_1_and_platform_the_rest(
    store: Store, live: str
) -> None:
    seen = []
    for _ in range(3):
        await send(store, "rose")
        seen.append((await balances(store))[1:])
    assert seen == [(0, 1), (1, 1), (1, 2)]


async def test_diamonds_always_equal_floor_of_total_received_times_share(
    store: Store, clock: FakeClock
) -> None:
    odd = with_config(
        store, clock, economy={"creator_share_bps": 3333}, limits={"gift_burst": 1000}
    )
    senders = [viewer(name) for name in ("alice", "bob", "carol")]
    for who in senders:
        await fund(odd, who.user_id, "coins_10000")
    await live_stream(odd)
    gifts = ["rose", "finger_heart", "doughnut", "cap", "hand_hearts"]
    total = 0
    for i in range(45):
        gift_id, count = gifts[i * 7 % 5], 1 + i * 5 % 4
        await send(odd, gift_id, count, who=senders[i % 3])
        total += odd.settings.gift(gift_id).coins * count  # type: ignore[union-attr]
        _, diamonds, platform = await balances(odd)
        assert (diamonds, platform) == (total * 3333 // 10000, total - total * 3333 // 10000)
    entries = [journal_fields(e) for _, e in await odd.redis.xrange(keys.journal("streamer1"))]
    legs = [e for e in entries if e["type"] == "gift"]
    assert sum(int(e["diamonds"]) for e in legs) == total * 3333 // 10000
    assert sum(int(e["coins"]) for e in legs) == total


# --- combo -------------------------------------------------------------------------------


async def test_combo_counts_up_within_the_window_and_restarts_after_it(
    store: Store, clock: FakeClock, live: str
) -> None:
    window = store.settings.limits.combo_window_ms
    assert (await send(store, "rose", 1)).combo == 1
    clock.advance(window)  # exactly the window: still the same streak
    assert (await send(store, "rose", 2)).combo == 3
    clock.advance(window + 1)  # one ms of quiet too many: a new streak
    assert (await send(store, "rose", 4)).combo == 4


async def test_combo_is_counted_per_sender_and_per_gift(store: Store, live: str) -> None:
    await fund(store, "bob")
    assert (await send(store, "rose", 5)).combo == 5
    assert (await send(store, "finger_heart", 1)).combo == 1
    assert (await send(store, "rose", 1, who=viewer("bob"))).combo == 1
    assert (await send(store, "rose", 1)).combo == 6


# --- daily budget (set_daily_limit.lua + send_gift code 7) -------------------------------


async def test_set_daily_limit_stores_and_clears_the_users_own_budget(
    store: Store, live: str
) -> None:
    assert await wallet.set_daily_limit(store, "alice", 7) == 7
    assert (await wallet.read_wallet(store, "alice"))["daily_limit"] == 7
    assert await wallet.set_daily_limit(store, "alice", None) is None
    assert (await wallet.read_wallet(store, "alice"))["daily_limit"] is None
    assert (await send(store, "rose", 50)).coins == 50  # no budget left to stop it


async def test_set_daily_limit_on_a_wrong_typed_wallet_changes_nothing(store: Store) -> None:
    await store.redis.set(keys.wallet("alice"), "corrupt")
    await assert_refused(
        store, ErrorCode.STORAGE_CORRUPT, wallet.set_daily_limit(store, "alice", 5)
    )
    await assert_refused(
        store, ErrorCode.STORAGE_CORRUPT, wallet.set_daily_limit(store, "alice", None)
    )


async def test_daily_budget_refuses_the_gift_that_would_pass_it(store: Store, live: str) -> None:
    await wallet.set_daily_limit(store, "alice", 10)
    await send(store, "finger_heart", 1)
    await assert_refused(store, ErrorCode.DAILY_LIMIT_EXCEEDED, send(store, "rose", 6))
    await send(store, "rose", 5)  # exactly the budget
    assert await wallet.read_wallet(store, "alice") == {
        "user_id": "alice", "coins": 90, "diamonds": 0,
        "spent_today": 10, "daily_limit": 10, "owed": 0,
    }  # fmt: skip
    await assert_refused(store, ErrorCode.DAILY_LIMIT_EXCEEDED, send(store, "rose", 1))


async def test_a_spent_day_stored_otherwise_than_the_scripts_write_it_is_still_its_day(
    store: Store, live: str
) -> None:
    """A gift tells its own day from the wallet's `spent_day` by comparing texts (no
    number parsed: docs/performance.md); the same day written with a leading zero is
    parsed and still the same day."""
    await wallet.set_daily_limit(store, "alice", 10)
    await send(store, "rose", 6)
    day = await store.redis.hget(keys.wallet("alice"), "spent_day")
    await store.redis.hset(keys.wallet("alice"), "spent_day", f"0{day}")
    await assert_refused(store, ErrorCode.DAILY_LIMIT_EXCEEDED, send(store, "rose", 5))
    await send(store, "rose", 4)  # exactly the budget
    assert (await wallet.read_wallet(store, "alice"))["spent_today"] == 10


async def test_daily_budget_resets_at_the_next_utc_midnight(
    store: Store, clock: FakeClock, live: str
) -> None:
    await wallet.set_daily_limit(store, "alice", 10)
    await send(store, "rose", 10)
    clock.now = (day_number(T0) + 1) * DAY_MS - 1  # 23:59:59.999, same UTC day
    await assert_refused(store, ErrorCode.DAILY_LIMIT_EXCEEDED, send(store, "rose", 1))
    clock.advance(1)
    await send(store, "rose", 10)
    assert (await wallet.read_wallet(store, "alice"))["spent_today"] == 10


MIDNIGHT = (day_number(T0) + 1) * DAY_MS
# (stamp, rose count, accepted under a budget of 10): two gifts of each UTC day pass,
# a third of each day would pass its own day's budget.
AROUND_MIDNIGHT = {
    "a": (MIDNIGHT - 1, 6, True),
    "b": (MIDNIGHT, 8, True),
    "c": (MIDNIGHT - 2, 5, False),
    "d": (MIDNIGHT + 1, 3, False),
}


@pytest.mark.parametrize("order", ["abcd", "abdc", "badc", "bdac"])  # a before c, b before d
async def test_gifts_stamped_across_midnight_count_on_their_own_day_in_any_order(
    store: Store, clock: FakeClock, live: str, order: str
) -> None:
    """Workers' clocks differ: a gift stamped 23:59:59.999 may reach Redis after one
    stamped 00:00. It counts on its own day, and never resets the newer day."""
    await fund(store, "alice", "coins_100")
    await wallet.set_daily_limit(store, "alice", 10)
    for name in order:
        stamp, count, accepted = AROUND_MIDNIGHT[name]
        clock.now = stamp
        if accepted:
            await send(store, "rose", count, key=name)
        else:
            await assert_refused(store, ErrorCode.DAILY_LIMIT_EXCEEDED, send(store, "rose", count))
    clock.now = MIDNIGHT + 2
    assert (await wallet.read_wallet(store, "alice"))["spent_today"] == 8
    await send(store, "rose", 2)  # exactly the new day's budget
    await assert_refused(store, ErrorCode.DAILY_LIMIT_EXCEEDED, send(store, "rose", 1))
    clock.now = MIDNIGHT - 3  # a worker still before midnight sees the old day's spending
    assert (await wallet.read_wallet(store, "alice"))["spent_today"] == 6


async def test_a_late_gift_over_a_day_before_that_does_not_parse_is_storage_corrupt(
    store: Store, clock: FakeClock, live: str
) -> None:
    """What was spent the day before `spent_day` is read only by a late gift of that day
    (no other gift's HMGET asks for it, docs/performance.md): that read still refuses a
    stored value that is no integer before any write, and a gift of `spent_day` itself
    neither reads nor minds it."""
    await fund(store, "alice", "coins_100")
    await wallet.set_daily_limit(store, "alice", 10)
    clock.now = MIDNIGHT
    await send(store, "rose", 2, key="new-day")
    await store.redis.hset(keys.wallet("alice"), "spent_before", "corrupt")
    clock.now = MIDNIGHT - 1
    await assert_refused(store, ErrorCode.STORAGE_CORRUPT, send(store, "rose", 1))
    clock.now = MIDNIGHT + 1
    await send(store, "rose", 3, key="same-day")
    assert await store.redis.hget(keys.wallet("alice"), "spent") == "5"


# --- rate limit ----------------------------------------------------------------------------


async def test_rate_limit_refuses_past_the_burst_and_refills_with_fake_time(
    store: Store, clock: FakeClock
) -> None:
    slow = with_config(store, clock, limits={"gift_burst": 3, "gift_rate_per_s": 2})
    await fund(slow, "alice")
    await live_stream(slow)
    for _ in range(3):
        await send(slow)
    await assert_refused(slow, ErrorCode.RATE_LIMITED, send(slow))
    clock.advance(499)  # 0.998 of a token
    await assert_refused(slow, ErrorCode.RATE_LIMITED, send(slow))
    clock.advance(1)
    await send(slow)
    await assert_refused(slow, ErrorCode.RATE_LIMITED, send(slow))
    clock.advance(3_600_000)  # a long pause refills the bucket only up to the burst
    for _ in range(3):
        await send(slow)
    await assert_refused(slow, ErrorCode.RATE_LIMITED, send(slow))


async def test_a_gift_reaching_redis_with_an_earlier_clock_costs_one_token_only(
    store: Store, clock: FakeClock
) -> None:
    """Concurrent gifts can reach the script out of clock order: the bucket must not
    treat the step back in time as a debt."""
    strict = with_config(store, clock, limits={"gift_burst": 2, "gift_rate_per_s": 1})
    await fund(strict, "alice")
    await live_stream(strict)
    await send(strict)  # 1 token left
    clock.advance(-400)  # this worker read its clock before the other's gift landed
    await send(strict)  # takes the last token
    clock.advance(400)
    await assert_refused(strict, ErrorCode.RATE_LIMITED, send(strict))


async def test_a_refill_time_ahead_of_a_late_gift_is_stored_back_as_an_integer(
    store: Store, clock: FakeClock
) -> None:
    """A gift whose clock is behind the bucket's refill time keeps that time, written
    as the scripts write a number: a time stored in another spelling that Lua still
    reads as one (by hand, a restore) is not carried on. Kept as it came, "inf" would
    turn the sender's rate limit off for good: every later gift is behind it, and
    refills its bucket from inf - inf."""
    strict = with_config(store, clock, limits={"gift_burst": 2, "gift_rate_per_s": 1})
    await fund(strict, "alice")
    await live_stream(strict)
    wallet_key = keys.wallet("alice")
    ahead = T0 + 1000
    for spelled in (f" {ahead}", f"{ahead}.0", f"{ahead // 1000}e3", hex(ahead)):
        await store.redis.hset(wallet_key, mapping={"rl_at": spelled, "rl_tokens": "2000"})
        await send(strict)
        assert await store.redis.hget(wallet_key, "rl_at") == str(ahead)
    await store.redis.hset(wallet_key, mapping={"rl_at": "inf", "rl_tokens": "2000"})
    await send(strict)
    int(await store.redis.hget(wallet_key, "rl_at"))  # an integer again
    with pytest.raises(GiftingError) as limited:
        for _ in range(3):  # a bucket of 2 and what one refill can add
            await send(strict)
    assert limited.value.code is ErrorCode.RATE_LIMITED


# --- who may gift, and to what -----------------------------------------------------------


async def test_viewer_without_age_verification_cannot_gift(store: Store, live: str) -> None:
    await fund(store, "minor")
    minor = viewer("minor", adult=False)
    await assert_refused(store, ErrorCode.AGE_VERIFICATION_REQUIRED, send(store, who=minor))


async def test_unverified_viewer_may_gift_where_the_age_rule_is_off(
    store: Store, clock: FakeClock
) -> None:
    relaxed = with_config(store, clock, limits={"require_age_verification": False})
    await fund(relaxed, "minor")
    await live_stream(relaxed)
    assert (await send(relaxed, who=viewer("minor", adult=False))).coins == 99


async def test_streamer_cannot_gift_their_own_stream(store: Store, live: str) -> None:
    await fund(store, "streamer1")
    await assert_refused(store, ErrorCode.SELF_GIFT, send(store, who=viewer("streamer1")))


async def test_gift_to_an_unknown_stream_is_refused(store: Store, live: str) -> None:
    await assert_refused(store, ErrorCode.UNKNOWN_STREAM, send(store, stream="nope"))


async def test_gift_to_a_stream_whose_meta_vanished_after_caching_its_owner_is_refused(
    store: Store, live: str
) -> None:
    await send(store)  # the worker now remembers streamer1 owns s1
    await store.redis.delete(keys.stream("s1"))
    await assert_refused(store, ErrorCode.UNKNOWN_STREAM, send(store))


async def test_gift_to_an_ended_stream_is_refused(store: Store, live: str) -> None:
    await send(store)
    await streams.end_stream(store, "streamer1", "s1")
    await assert_refused(store, ErrorCode.STREAM_NOT_LIVE, send(store))


async def test_gift_costing_more_than_the_balance_is_refused(store: Store, live: str) -> None:
    await assert_refused(store, ErrorCode.INSUFFICIENT_FUNDS, send(store, "hand_hearts", 2))
    await assert_refused(store, ErrorCode.INSUFFICIENT_FUNDS, send(store, who=viewer("broke")))
    assert (await send(store, "hand_hearts", 1)).coins == 0  # exactly the balance is fine


# --- a script never leaves a partial write -------------------------------------------------

DAY = day_number(T0)
# Written first (its XADD is the first write): refused, nothing written.
CHECKED = {"history": keys.stream_history("s1")}
READ_FIRST = {
    "viewer wallet": keys.wallet("alice"),
    "streamer wallet": keys.wallet("streamer1"),
    "idempotency record": keys.idempotency("alice", "again"),
    "stream meta": keys.stream("s1"),
}
# Written unread, without a type check (docs/performance.md): only someone with Redis
# access can plant one, and reconcile names it.
WRITTEN_UNREAD = {
    "streamer's held diamonds": keys.held_diamonds("streamer1"),
    "platform account": keys.platform_account("streamer1"),
    "stream leaderboard": keys.stream_leaderboard("s1"),
    "day leaderboard": keys.channel_leaderboard("streamer1", "day", DAY),
    "all-time leaderboard": keys.channel_leaderboard("streamer1", "all"),
    "open streaks": keys.open_streaks("s1"),
    "journal": keys.journal("streamer1"),
}


@pytest.mark.parametrize("key", [*CHECKED.values(), *READ_FIRST.values()],
                         ids=[*CHECKED, *READ_FIRST])  # fmt: skip
async def test_gift_over_a_wrong_typed_key_is_storage_corrupt_and_changes_nothing(
    store: Store, live: str, key: str
) -> None:
    if not key.startswith("{u:alice}"):
        one_script_only(store, "across slots, only the sender's slot is checked before the "
                        "debit: tests/ledger/test_transfers.py")  # fmt: skip
    await send(store)  # every key of the gift exists now, with its real type
    if key.endswith(":idem:again"):
        await store.redis.hset(key, "planted", "1")  # a hash where a string belongs
    else:
        await store.redis.set(key, "planted")  # a string where a hash/zset/stream belongs
    # 5 coins: diamonds and a platform share, so the gift touches every key
    again = send(store, "finger_heart", key="again")
    await assert_refused(store, ErrorCode.STORAGE_CORRUPT, again)


@pytest.mark.parametrize("key", WRITTEN_UNREAD.values(), ids=WRITTEN_UNREAD)
async def test_a_wrong_typed_key_a_gift_writes_unread_is_named_by_reconcile(
    store: Store, live: str, key: str
) -> None:
    await send(store)
    await store.redis.delete(key)
    await store.redis.set(key, "planted")  # as only someone with Redis access can
    with pytest.raises(GiftingError) as refused:  # a new streak: every key is written
        await send(store, "finger_heart", key="again")
    assert refused.value.code is ErrorCode.STORAGE_CORRUPT
    report = await reconcile.reconcile(store.redis, store.settings.economy.creator_share_bps)
    assert f"storage: {key} is a string, not a " in report.format(), report.format()


async def test_gift_after_stream_meta_was_lost_and_recreated_never_half_applies(
    store: Store, live: str
) -> None:
    """Meta evicted or deleted, the streamer goes live again: seq restarts at 0 while the
    history still ends at 1-0, so the script's XADD of event 1 would be refused."""
    await send(store)
    await store.redis.delete(keys.stream("s1"))
    assert await streams.start_stream(store, "streamer1", "s1") is True
    before = await snapshot(store.redis)
    try:
        receipt = await send(store)
    except GiftingError as refused:  # refusing is fine, if nothing was written
        assert refused.code is ErrorCode.STORAGE_CORRUPT
        assert await snapshot(store.redis) == before
    else:  # succeeding is fine, if the event id stays unique in the history
        assert receipt.event_id > 1
        assert await store.redis.xlen(keys.stream_history("s1")) == 2


async def test_the_biggest_send_the_config_allows_is_exact_and_reconciles(
    store: Store, clock: FakeClock
) -> None:
    """config.py bounds coins x max_gift_count by 2^53 - 1: the script's doubles stay
    exact and every number it hands Redis is an integer Redis takes (1e17 would fail
    after the script's first write), and the creator share stays exact far past the
    point where received x share_bps passes 2^53."""
    count = store.settings.limits.max_gift_count
    big = Gift("big", "Big", MAX_INT // count, 4, "B")
    settings = dataclasses.replace(
        store.settings,
        gifts=(big,),
        packages=(CoinPackage("whale", MAX_INT, 1),),
        economy=dataclasses.replace(store.settings.economy, creator_share_bps=9999),
    )
    big_store = Store(store.redis, settings, clock=clock)
    await fund(big_store, "alice", "whale")
    await live_stream(big_store)
    receipt = await send(big_store, "big", count)
    cost = big.coins * count
    assert receipt.coins == MAX_INT - cost
    diamonds = cost * 9999 // 10_000
    assert await balances(big_store) == (MAX_INT - cost, diamonds, cost - diamonds)
    await assert_reconciled(big_store)
