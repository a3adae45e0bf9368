"""cashout.lua through `wallet.cashout`: holding period, minimum, daily cap, exactly once."""

from __future__ import annotations

from collections.abc import Awaitable

import orjson
import pytest

from gifting_server.errors import ErrorCode
from gifting_server.ledger import gifts, keys, wallet
from gifting_server.ledger.clock import DAY_MS, HOUR_MS, day_number
from gifting_server.ledger.store import Store
from tests.conftest import make_settings
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import FakeClock, assert_refused, snapshot

T0 = 1_704_283_200_000  # 2024-01-03 12:00 UTC
HOLD = 7 * DAY_MS  # the default holding period


async def earn(store: Store, diamonds: int) -> None:
    """streamer1 earns `diamonds` now: alice gifts twice as many coins (50% share)."""
    rose = store.settings.gift("rose")
    assert rose is not None
    key = f"earn-{store.clock()}-{diamonds}"
    await gifts.run_send_gift(store, viewer("alice"), "s1", rose, 2 * diamonds, key)


def cash(store: Store, diamonds: int, key: str) -> Awaitable[wallet.Cashout]:
    return wallet.cashout(store, "streamer1", diamonds, key)


async def diamonds_of(store: Store) -> int:
    return int((await wallet.read_wallet(store, "streamer1"))["diamonds"])


@pytest.fixture
async def clock(store: Store) -> FakeClock:
    """alice holds 50,000 coins; stream s1 of streamer1 is live; the clock is fake."""
    store.clock = fake = FakeClock(T0)
    await fund(store, "alice", "coins_50000")
    await live_stream(store)
    return fake


async def test_cashout_after_the_holding_period_pays_and_records_a_pending_payout(
    store: Store, clock: FakeClock
) -> None:
    await earn(store, 2000)
    clock.advance(HOLD)

    paid = await cash(store, 2000, "co-1")

    assert paid.cashout_id.startswith("co_")
    assert (paid.diamonds, paid.cents, paid.currency) == (2000, 1000, "USD")
    assert (paid.diamonds_left, paid.replayed) == (0, False)
    assert await diamonds_of(store) == 0
    [(cashout_id, record)] = (await store.redis.hgetall(keys.cashouts("streamer1"))).items()
    assert cashout_id == paid.cashout_id
    assert orjson.loads(record) == {
        "cashout_id": paid.cashout_id, "diamonds": 2000, "cents": 1000,
        "currency": "USD", "status": "pending", "created_ms": clock.now,
    }  # fmt: skip
    *_, (_, entry) = await store.redis.xrange(keys.journal("streamer1"))
    assert entry == {
        "type": "cashout", "user": "streamer1", "cashout": paid.cashout_id,
        "diamonds": "2000", "cents": "1000", "key": "co-1", "at": str(clock.now),
    }  # fmt: skip
    assert await store.redis.exists(keys.held_diamonds("streamer1")) == 0  # released hour pruned


async def test_cashout_leaves_the_rest_of_the_diamonds(store: Store, clock: FakeClock) -> None:
    await earn(store, 5000)
    clock.advance(HOLD)
    assert (await cash(store, 2000, "co-1")).diamonds_left == 3000
    assert await diamonds_of(store) == 3000


async def test_diamonds_inside_the_holding_period_cannot_be_cashed_out(
    store: Store, clock: FakeClock
) -> None:
    await earn(store, 2000)
    clock.advance(HOLD - 1)  # the last ms of the holding period (T0 is a whole hour)
    await assert_refused(store, ErrorCode.INSUFFICIENT_DIAMONDS, cash(store, 2000, "co-1"))
    clock.advance(1)
    assert (await cash(store, 2000, "co-1")).diamonds == 2000


@pytest.mark.parametrize(
    "earned_at",
    [
        (day_number(T0) + 1) * DAY_MS - 1,  # 23:59:59.999: once free 6 days + 1 ms later
        T0 + HOUR_MS - 1,  # the last ms of an hour: released 1 ms after the period
        T0 + 1,  # the first ms after a whole hour: held an hour less 1 ms longer
    ],
    ids=["end of a day", "end of an hour", "start of an hour"],
)
async def test_diamonds_are_held_the_whole_period_from_the_moment_they_were_earned(
    store: Store, clock: FakeClock, earned_at: int
) -> None:
    clock.now = earned_at
    await earn(store, 2000)
    released = -(-(earned_at + HOLD) // HOUR_MS) * HOUR_MS  # the period, up to a whole hour
    for moment in ((day_number(earned_at) + 7) * DAY_MS, earned_at + HOLD - 1, released - 1):
        clock.now = moment
        await assert_refused(store, ErrorCode.INSUFFICIENT_DIAMONDS, cash(store, 2000, "co-1"))
    clock.now = released
    assert (await cash(store, 2000, "co-1")).diamonds == 2000


async def test_only_the_released_part_of_the_diamonds_can_be_cashed_out(
    store: Store, clock: FakeClock
) -> None:
    await earn(store, 2000)
    clock.advance(5 * DAY_MS)
    await earn(store, 2000)
    clock.advance(2 * DAY_MS)  # the first 2000 are released, the second are held 5 more days
    await assert_refused(store, ErrorCode.INSUFFICIENT_DIAMONDS, cash(store, 4000, "co-1"))
    assert (await cash(store, 2000, "co-2")).diamonds_left == 2000
    await assert_refused(store, ErrorCode.INSUFFICIENT_DIAMONDS, cash(store, 2000, "co-3"))
    held = await store.redis.hgetall(keys.held_diamonds("streamer1"))
    assert held == {str(T0 + 5 * DAY_MS + HOLD): "2000"}


async def test_cashout_of_more_diamonds_than_held_is_refused_and_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await earn(store, 2000)
    clock.advance(HOLD)
    await assert_refused(store, ErrorCode.INSUFFICIENT_DIAMONDS, cash(store, 2002, "co-1"))
    nobody = wallet.cashout(store, "nobody", 2000, "co-1")
    await assert_refused(store, ErrorCode.INSUFFICIENT_DIAMONDS, nobody)


async def test_cashout_below_the_minimum_is_refused_and_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await earn(store, 5000)
    clock.advance(HOLD)
    await assert_refused(store, ErrorCode.CASHOUT_BELOW_MINIMUM, cash(store, 1998, "co-1"))
    await assert_refused(store, ErrorCode.CASHOUT_BELOW_MINIMUM, cash(store, 0, "co-2"))
    await assert_refused(store, ErrorCode.CASHOUT_BELOW_MINIMUM, cash(store, -2000, "co-3"))


async def test_cashout_of_a_fraction_of_a_cent_is_an_invalid_request(
    store: Store, clock: FakeClock
) -> None:
    await earn(store, 5000)
    clock.advance(HOLD)
    await assert_refused(store, ErrorCode.INVALID_REQUEST, cash(store, 2001, "co-1"))


async def test_cashouts_past_the_daily_cap_are_refused_until_the_next_utc_day(
    store: Store, clock: FakeClock
) -> None:
    base = store.settings
    economy = {"cashout_daily_cap_cents": 1500}
    capped = Store(
        store.redis, make_settings(str(base.redis_url), base.data_dir, economy=economy), clock
    )
    await earn(capped, 4000)
    clock.advance(HOLD)
    assert (await cash(capped, 2000, "co-1")).cents == 1000
    await assert_refused(capped, ErrorCode.CASHOUT_DAILY_CAP, cash(capped, 2000, "co-2"))
    clock.now = (day_number(clock.now) + 1) * DAY_MS
    assert (await cash(capped, 2000, "co-2")).diamonds_left == 0


MIDNIGHT = (day_number(T0) + 1) * DAY_MS
# (stamp, accepted under a cap of $15): 2000 diamonds are $10, so one per UTC day passes.
AROUND_MIDNIGHT = {
    "a": (MIDNIGHT - 1, True),
    "b": (MIDNIGHT, True),
    "c": (MIDNIGHT - 2, False),
    "d": (MIDNIGHT + 1, False),
}


@pytest.mark.parametrize("order", ["abcd", "abdc", "badc", "bdac"])  # a before c, b before d
async def test_cashouts_stamped_across_midnight_count_on_their_own_day_in_any_order(
    store: Store, clock: FakeClock, order: str
) -> None:
    """A request stamped 23:59:59.999 that reaches Redis after one stamped 00:00 counts
    on its own day's cap and never resets the newer day's."""
    base = store.settings
    economy = {"cashout_daily_cap_cents": 1500, "holding_period_days": 0}
    capped = Store(
        store.redis, make_settings(str(base.redis_url), base.data_dir, economy=economy), clock
    )
    await earn(capped, 12000)
    for name in order:
        stamp, accepted = AROUND_MIDNIGHT[name]
        clock.now = stamp
        if accepted:
            assert (await cash(capped, 2000, name)).cents == 1000
        else:
            await assert_refused(capped, ErrorCode.CASHOUT_DAILY_CAP, cash(capped, 2000, name))
    clock.now = MIDNIGHT + 2
    await assert_refused(capped, ErrorCode.CASHOUT_DAILY_CAP, cash(capped, 2000, "e"))
    assert await diamonds_of(capped) == 12000 - 4000


async def test_same_cashout_key_answers_the_first_result_and_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await earn(store, 4000)
    clock.advance(HOLD)
    first = await cash(store, 2000, "co-1")
    before = await snapshot(store.redis)
    clock.advance(1000)
    again = await cash(store, 2000, "co-1")
    assert again == wallet.Cashout(
        first.cashout_id, 2000, 1000, "USD", diamonds_left=2000, replayed=True
    )
    assert await snapshot(store.redis) == before


async def test_same_cashout_key_for_other_diamonds_is_a_conflict_and_changes_nothing(
    store: Store, clock: FakeClock
) -> None:
    await earn(store, 5000)
    clock.advance(HOLD)
    await cash(store, 2000, "co-1")
    await assert_refused(store, ErrorCode.IDEMPOTENCY_CONFLICT, cash(store, 2002, "co-1"))


# --- a script never leaves a partial write -------------------------------------------------

CORRUPTIBLE = {
    "cash-outs": keys.cashouts("streamer1"),
    "journal": keys.journal("streamer1"),
    "wallet": keys.wallet("streamer1"),
    "held diamonds": keys.held_diamonds("streamer1"),
    "earnings by day (before hourly holds)": keys.earnings_by_day("streamer1"),
    "idempotency record": keys.idempotency("streamer1", "co-2"),
}


@pytest.mark.parametrize("key", CORRUPTIBLE.values(), ids=CORRUPTIBLE.keys())
async def test_cashout_over_a_wrong_typed_key_is_storage_corrupt_and_changes_nothing(
    store: Store, clock: FakeClock, key: str
) -> None:
    await earn(store, 4000)
    clock.advance(HOLD)
    await cash(store, 2000, "co-1")  # the cash-outs hash and journal exist with their types
    await earn(store, 10)  # and a held day, so the earnings hash exists as well
    if key.endswith(":idem:co-2"):
        await store.redis.hset(key, "planted", "1")  # a hash where a string belongs
    else:
        await store.redis.set(key, "planted")
    await assert_refused(store, ErrorCode.STORAGE_CORRUPT, cash(store, 2000, "co-2"))
