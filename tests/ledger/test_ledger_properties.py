"""Random recharges, refunds, gifts, cash-outs, budgets and streams against a plain model.

After every step each real wallet must equal the model and `reconcile` must pass.
The machine runs on the tests' real Redis with its own event loop and its own clock,
which moves a millisecond per call and a day when the `next_day` rule says so.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import hypothesis
import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, payments, streams, transfers, wallet
from gifting_server.ledger.clock import DAY_MS
from gifting_server.ledger.gifts import GiftReceipt
from gifting_server.ledger.payments import PaymentResult
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import Store, connect
from gifting_server.ledger.wallet import Cashout
from tests.conftest import make_settings
from tests.factories import viewer
from tests.ledger.conftest import GIFT_PATHS
from tests.topology import all_keys

T = TypeVar("T")

USERS = ("v1", "v2", "v3", "t1", "t2")  # t1 and t2 stream, and gift each other too
STREAMS = {"s1": "t1", "s2": "t2"}
PACKAGES = ("coins_100", "coins_500", "coins_1000")
STAKES = ("coins_1000", "coins_5000")  # what every user buys first
GIFTS = ("rose", "finger_heart", "doughnut", "cap", "hand_hearts", "corgi", "money_gun")
SUCCEEDED, REFUNDED = payments.PAYMENT_KINDS
START_MS = 20_000 * DAY_MS + 3_600_000  # 01:00 UTC
CASHOUT_MIN = 2
CASHOUT_CAP_CENTS = 400  # 800 diamonds a day: most cash-outs pass, some hit the cap

users = st.sampled_from(USERS)
counts = st.integers(1, 5) | st.sampled_from([10, 99])


@dataclass
class Account:
    coins: int = 0
    diamonds: int = 0
    owed: int = 0
    received: int = 0
    spent_today: int = 0
    limit: int | None = None
    cashed_cents: int = 0
    bought: Counter[str] = field(default_factory=Counter)  # un-refunded purchases per package


class LedgerMachine(RuleBasedStateMachine):
    redis_url: ClassVar[str] = ""
    data_dir: ClassVar[Path] = Path()
    # Gifts as the steps of a transfer across slots (ledger/transfers.py), where a
    # worker may die between the debit and the credits.
    across_slots: ClassVar[bool] = False

    payment_events = Bundle("payment_events")
    gift_keys = Bundle("gift_keys")
    cashout_keys = Bundle("cashout_keys")

    def __init__(self) -> None:
        super().__init__()
        self.settings = make_settings(
            self.redis_url,
            self.data_dir,
            economy={
                "holding_period_days": 0,
                "cashout_min_diamonds": CASHOUT_MIN,
                "cashout_daily_cap_cents": CASHOUT_CAP_CENTS,
            },
            limits={"gift_rate_per_s": 1_000_000, "gift_burst": 1_000_000},
        )
        self.settings = dataclasses.replace(self.settings, gifts_across_slots=self.across_slots)
        self.now = START_MS
        self.loop = asyncio.new_event_loop()
        redis = self.run(connect(self.redis_url, 5.0))
        self.store = Store(redis, self.settings, clock=self.tick)
        try:
            self.run(self.store.redis.flushall())
            for stream, streamer in STREAMS.items():
                self.run(streams.start_stream(self.store, streamer, stream))
        except BaseException:
            self.teardown()
            raise
        self.live = dict.fromkeys(STREAMS, True)
        self.accounts = {user: Account() for user in USERS}
        self.platform = 0
        self.boards: dict[str, Counter[str]] = {stream: Counter() for stream in STREAMS}
        self.payments: dict[str, tuple[str, str, str, PaymentResult]] = {}
        self.gifts: dict[tuple[str, str], tuple[str, GiftReceipt]] = {}
        # Debited by a worker that died before crediting: (sender, key) -> the request's
        # fingerprint and the coins left; `pending` while nothing finished them.
        self.died: dict[tuple[str, str], tuple[str, int]] = {}
        self.pending: set[tuple[str, str]] = set()
        self.cashouts: dict[tuple[str, str], tuple[int, Cashout]] = {}
        self.serial = 0

    def tick(self) -> int:
        self.now += 1
        return self.now

    def fresh(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial}"

    def run(self, call: Awaitable[T]) -> T:
        return self.loop.run_until_complete(call)

    def attempt(self, call: Awaitable[T]) -> tuple[T | None, ErrorCode | None]:
        try:
            return self.run(call), None
        except GiftingError as e:
            return None, e.code

    def teardown(self) -> None:
        try:
            self.run(self.store.redis.aclose())
        finally:
            self.loop.close()

    # -- coins in ---------------------------------------------------------------------

    def pay(self, user: str, event: str, kind: str, package_id: str) -> None:
        result, error = self.attempt(
            payments.apply_payment(self.store, user, event, kind, package_id)
        )
        seen = self.payments.get(event)
        if seen is not None:
            if seen[:3] != (user, kind, package_id):
                assert error is ErrorCode.IDEMPOTENCY_CONFLICT, (error, result)
            else:
                assert result == dataclasses.replace(seen[3], replayed=True)
            return
        package = self.settings.package(package_id)
        assert package is not None
        account = self.accounts[user]
        if kind == SUCCEEDED:
            settled = min(account.owed, package.coins)
            account.coins += package.coins - settled
            account.owed -= settled
            account.bought[package_id] += 1
            expected = PaymentResult(account.coins, package.coins - settled, 0, account.owed, False)
        elif account.bought[package_id] < 1:
            assert error is ErrorCode.NOTHING_TO_REFUND, (error, result)
            return
        else:
            clawed = min(account.coins, package.coins)
            account.coins -= clawed
            account.owed += package.coins - clawed
            account.bought[package_id] -= 1
            expected = PaymentResult(account.coins, 0, clawed, account.owed, False)
        assert (error, result) == (None, expected)
        self.payments[event] = (user, kind, package_id, expected)

    @initialize(
        packages=st.lists(st.sampled_from(STAKES), min_size=len(USERS), max_size=len(USERS))
    )
    def fund_everyone(self, packages: list[str]) -> None:
        """Start with coins everywhere, so gifts (and then cash-outs) mostly go through."""
        for user, package in zip(USERS, packages, strict=True):
            self.pay(user, self.fresh("evt"), SUCCEEDED, package)

    @rule(
        target=payment_events,
        user=users,
        package=st.sampled_from(PACKAGES),
        refund=st.booleans(),
    )
    def payment(self, user: str, package: str, refund: bool) -> tuple[str, str, str, str]:
        event, kind = self.fresh("evt"), REFUNDED if refund else SUCCEEDED
        self.pay(user, event, kind, package)
        return user, event, kind, package

    @rule(
        delivered=payment_events,
        changed=st.booleans(),
        package=st.sampled_from(PACKAGES),
        refund=st.booleans(),
    )
    def redeliver_payment(
        self, delivered: tuple[str, str, str, str], changed: bool, package: str, refund: bool
    ) -> None:
        user, event, kind, package_id = delivered
        if changed:
            kind, package_id = REFUNDED if refund else SUCCEEDED, package
        self.pay(user, event, kind, package_id)

    @precondition(lambda self: any(+account.bought for account in self.accounts.values()))
    @rule(data=st.data())
    def refund_a_purchase(self, data: st.DataObject) -> None:
        """Refund something really bought, often after its coins were gifted away."""
        user = data.draw(st.sampled_from([u for u, a in self.accounts.items() if +a.bought]))
        package = data.draw(st.sampled_from(sorted(+self.accounts[user].bought)))
        self.pay(user, self.fresh("refund"), REFUNDED, package)

    # -- gifts ------------------------------------------------------------------------

    def gift(
        self, sender: str, stream: str, gift_id: str, count: int, key: str, *, dies: bool = False
    ) -> None:
        """Send a gift and check the answer against the model. `dies`: only the debit
        runs, as when the worker dies right after it; the gift is committed."""
        gift = self.settings.gift(gift_id)
        assert gift is not None
        if dies:
            self.debit_and_die(sender, stream, gift_id, count, key)
            return
        receipt, error = self.attempt(
            gifts.run_send_gift(self.store, viewer(sender), stream, gift, count, key)
        )
        self.check_gift(sender, stream, gift_id, count, key, receipt, error)

    def check_gift(
        self,
        sender: str,
        stream: str,
        gift_id: str,
        count: int,
        key: str,
        receipt: gifts.GiftReceipt | None,
        error: ErrorCode | None,
    ) -> None:
        """A gift's answer against the model, which it then joins when committed."""
        gift = self.settings.gift(gift_id)
        assert gift is not None
        fingerprint = f"{stream}|{gift_id}|{count}"
        if stream not in STREAMS:
            assert error is ErrorCode.UNKNOWN_STREAM, (error, receipt)
            return
        died = self.died.get((sender, key))
        if died is not None:  # a retry answers (and finishes) what a dead worker debited
            if died[0] != fingerprint:
                assert error is ErrorCode.IDEMPOTENCY_CONFLICT, (error, receipt)
            else:
                assert receipt is not None and receipt.replayed, (error, receipt)
                assert receipt.coins == died[1]
                self.pending.discard((sender, key))
            return
        seen = self.gifts.get((sender, key))
        if seen is not None:
            if seen[0] != fingerprint:
                assert error is ErrorCode.IDEMPOTENCY_CONFLICT, (error, receipt)
            else:
                assert receipt == dataclasses.replace(seen[1], replayed=True)
            return
        account, streamer = self.accounts[sender], STREAMS[stream]
        cost = gift.coins * count
        expected_error = None
        if not self.live[stream]:
            expected_error = ErrorCode.STREAM_NOT_LIVE
        elif streamer == sender:
            expected_error = ErrorCode.SELF_GIFT
        elif account.coins < cost:
            expected_error = ErrorCode.INSUFFICIENT_FUNDS
        elif account.limit is not None and account.spent_today + cost > account.limit:
            expected_error = ErrorCode.DAILY_LIMIT_EXCEEDED
        assert error is expected_error, (error, expected_error)
        if receipt is None:
            return
        self.commit(sender, stream, cost)
        assert (receipt.coins, receipt.replayed) == (account.coins, False)
        self.gifts[(sender, key)] = (fingerprint, receipt)

    def commit(self, sender: str, stream: str, cost: int) -> None:
        """What the model holds once a gift is committed (its debit ran)."""
        account, streamer = self.accounts[sender], STREAMS[stream]
        share = self.settings.economy.creator_share_bps
        earner = self.accounts[streamer]
        diamonds = (earner.received + cost) * share // 10_000 - earner.received * share // 10_000
        account.coins -= cost
        account.spent_today += cost
        earner.received += cost
        earner.diamonds += diamonds
        self.platform += cost - diamonds
        self.boards[stream][sender] += cost

    def debit_and_die(self, sender: str, stream: str, gift_id: str, count: int, key: str) -> None:
        gift = self.settings.gift(gift_id)
        assert gift is not None and stream in STREAMS
        identity = viewer(sender)
        debited, error = self.attempt(
            transfers.debit(
                self.store, identity, stream, STREAMS[stream], gift, count, key,
                gifts.event_fragment(identity, gift),
            )
        )  # fmt: skip
        account, cost = self.accounts[sender], gift.coins * count
        expected_error = None
        if not self.live[stream]:
            expected_error = ErrorCode.STREAM_NOT_LIVE
        elif STREAMS[stream] == sender:
            expected_error = ErrorCode.SELF_GIFT
        elif account.coins < cost:
            expected_error = ErrorCode.INSUFFICIENT_FUNDS
        elif account.limit is not None and account.spent_today + cost > account.limit:
            expected_error = ErrorCode.DAILY_LIMIT_EXCEEDED
        assert error is expected_error, (error, expected_error)
        if debited is None:
            return
        self.commit(sender, stream, cost)
        assert debited.coins_left == account.coins
        self.died[(sender, key)] = (f"{stream}|{gift_id}|{count}", debited.coins_left)
        self.pending.add((sender, key))

    @precondition(lambda self: self.across_slots)
    @rule(
        target=gift_keys,
        sender=users,
        stream=st.sampled_from(list(STREAMS)),
        gift_id=st.sampled_from(GIFTS),
        count=counts,
    )
    def a_worker_dies_after_a_debit(
        self, sender: str, stream: str, gift_id: str, count: int
    ) -> tuple[str, str]:
        key = self.fresh("died")
        self.gift(sender, stream, gift_id, count, key, dies=True)
        return sender, key

    @precondition(lambda self: bool(self.pending))
    @rule()
    def the_relay_finishes_what_dead_workers_left(self) -> None:
        everything = list(range(keys.SLOTS))
        finished = self.run(transfers.relay_transfers(self.store, everything, self.now + DAY_MS))
        assert finished == len(self.pending)
        self.pending.clear()

    @rule(
        target=gift_keys,
        sender=users,
        stream=st.sampled_from([*STREAMS, "nowhere"]),
        gift_id=st.sampled_from(GIFTS),
        count=counts,
    )
    def send_gift(self, sender: str, stream: str, gift_id: str, count: int) -> tuple[str, str]:
        key = self.fresh("gift")
        self.gift(sender, stream, gift_id, count, key)
        return sender, key

    @rule(
        used=gift_keys,
        same=st.booleans(),
        stream=st.sampled_from(list(STREAMS)),
        gift_id=st.sampled_from(GIFTS),
        count=counts,
    )
    def reuse_gift_key(
        self, used: tuple[str, str], same: bool, stream: str, gift_id: str, count: int
    ) -> None:
        seen = self.gifts.get(used)
        if same and seen is not None:
            stream, gift_id, raw_count = seen[0].split("|")
            count = int(raw_count)
        sender, key = used
        self.gift(sender, stream, gift_id, count, key)

    @rule(
        sender=users,
        stream=st.sampled_from(list(STREAMS)),
        taps=st.lists(st.tuples(st.sampled_from(GIFTS[:4]), counts), min_size=1, max_size=8),
    )
    def tap_gifts(self, sender: str, stream: str, taps: list[tuple[str, int]]) -> None:
        """A viewer taps cheap gifts in a row, each with its own idempotency key."""
        for gift_id, count in taps:
            self.gift(sender, stream, gift_id, count, self.fresh("tap"))

    @rule(
        burst=st.lists(
            st.tuples(users, st.sampled_from(list(STREAMS)), st.sampled_from(GIFTS), counts,
                      st.booleans()),
            min_size=2, max_size=10,
        ),
    )  # fmt: skip
    def gifts_at_once(self, burst: list[tuple[str, str, str, int, bool]]) -> None:
        """Gifts that reach the ledger in the same pass of the loop: on one Redis one
        send_gifts call (ledger/gift_batch.py). Each answer is the one it would get
        sent after the gifts before it; a gift may reuse the key of the one before."""
        calls, sent = [], []
        for i, (sender, stream, gift_id, count, reuse) in enumerate(burst):
            key = sent[-1][4] if reuse and i and sent[-1][0] == sender else self.fresh("burst")
            gift = self.settings.gift(gift_id)
            assert gift is not None
            sent.append((sender, stream, gift_id, count, key))
            calls.append(gifts.run_send_gift(self.store, viewer(sender), stream, gift, count, key))

        async def at_once() -> list[Any]:
            for stream in STREAMS:  # owners known: no gift waits for a lookup
                await streams.streamer_of(self.store, stream)
            if self.across_slots:  # the steps of concurrent gifts may interleave
                return [await self._answer(call) for call in calls]
            return list(await asyncio.gather(*(self._answer(call) for call in calls)))

        for (sender, stream, gift_id, count, key), (receipt, error) in zip(
            sent, self.run(at_once()), strict=True
        ):
            self.check_gift(sender, stream, gift_id, count, key, receipt, error)

    @staticmethod
    async def _answer(
        call: Awaitable[gifts.GiftReceipt],
    ) -> tuple[gifts.GiftReceipt | None, ErrorCode | None]:
        try:
            return await call, None
        except GiftingError as e:
            return None, e.code

    @rule(stream=st.sampled_from(list(STREAMS)))
    def toggle_stream(self, stream: str) -> None:
        streamer = STREAMS[stream]
        if self.live[stream]:
            self.run(streams.end_stream(self.store, streamer, stream))
        else:
            self.run(streams.start_stream(self.store, streamer, stream))
        self.live[stream] = not self.live[stream]

    @rule()
    def next_day(self) -> None:
        """Midnight UTC: daily budgets and cash-out caps start over."""
        self.now += DAY_MS
        for account in self.accounts.values():
            account.spent_today = account.cashed_cents = 0

    # A pending transfer's diamonds are in the model, not yet in the wallet.
    @precondition(lambda self: not self.pending)
    @rule(share=st.sampled_from([5000, 3333, 6000, 10_000]))
    def change_creator_share(self, share: int) -> None:
        """The operator changes `creator_share_bps`: later gifts pay the new share, and
        the ledger must still reconcile (under whichever share is configured)."""
        economy = dataclasses.replace(self.settings.economy, creator_share_bps=share)
        self.settings = self.store.settings = dataclasses.replace(self.settings, economy=economy)

    @rule(user=users, limit=st.none() | st.integers(0, 2000))
    def set_daily_limit(self, user: str, limit: int | None) -> None:
        self.run(wallet.set_daily_limit(self.store, user, limit))
        self.accounts[user].limit = limit

    # -- diamonds out -----------------------------------------------------------------

    def cash_out(self, user: str, diamonds: int, key: str) -> None:
        result, error = self.attempt(wallet.cashout(self.store, user, diamonds, key))
        if diamonds % self.settings.economy.diamonds_per_unit:
            assert error is ErrorCode.INVALID_REQUEST, (error, result)
            return
        seen = self.cashouts.get((user, key))
        if seen is not None:
            if seen[0] != diamonds:
                assert error is ErrorCode.IDEMPOTENCY_CONFLICT, (error, result)
            else:
                assert result == dataclasses.replace(seen[1], replayed=True)
            return
        economy = self.settings.economy
        account = self.accounts[user]
        cents = diamonds // economy.diamonds_per_unit * economy.cents_per_unit
        expected_error = None
        if diamonds < CASHOUT_MIN:
            expected_error = ErrorCode.CASHOUT_BELOW_MINIMUM
        elif account.diamonds < diamonds:
            expected_error = ErrorCode.INSUFFICIENT_DIAMONDS
        elif account.cashed_cents + cents > CASHOUT_CAP_CENTS:
            expected_error = ErrorCode.CASHOUT_DAILY_CAP
        assert error is expected_error, (error, expected_error)
        if result is None:
            return
        account.diamonds -= diamonds
        account.cashed_cents += cents
        assert (result.diamonds, result.cents, result.diamonds_left) == (
            diamonds,
            cents,
            account.diamonds,
        )
        assert not result.replayed
        self.cashouts[(user, key)] = (diamonds, result)

    # A pending transfer's diamonds are in the model, not yet in the wallet.
    @precondition(lambda self: not self.pending)
    @rule(
        target=cashout_keys,
        user=st.sampled_from(list(STREAMS.values())),
        diamonds=st.integers(0, 80),
        everything=st.booleans(),
    )
    def cashout(self, user: str, diamonds: int, everything: bool) -> tuple[str, str]:
        if everything:
            diamonds = self.accounts[user].diamonds // 2 * 2
        key = self.fresh("cashout")
        self.cash_out(user, diamonds, key)
        return user, key

    # A pending transfer's diamonds are in the model, not yet in the wallet.
    @precondition(lambda self: not self.pending)
    @rule(used=cashout_keys, same=st.booleans(), diamonds=st.integers(0, 80))
    def reuse_cashout_key(self, used: tuple[str, str], same: bool, diamonds: int) -> None:
        seen = self.cashouts.get(used)
        if same and seen is not None:
            diamonds = seen[0]
        user, key = used
        self.cash_out(user, diamonds, key)

    # -- after every step -------------------------------------------------------------

    @invariant()
    def wallets_equal_the_model_and_the_ledger_reconciles(self) -> None:
        redis = self.store.redis
        if self.pending:  # only the senders' side is there until the relay runs
            for user, account in self.accounts.items():
                real = self.run(wallet.read_wallet(self.store, user))
                assert (real["coins"], real["spent_today"]) == (account.coins, account.spent_today)
            return
        for user, account in self.accounts.items():
            real = self.run(wallet.read_wallet(self.store, user))
            received = int(self.run(redis.hget(keys.wallet(user), "received")) or 0)
            assert {
                "coins": real["coins"],
                "diamonds": real["diamonds"],
                "owed": real["owed"],
                "received": received,
                "spent_today": real["spent_today"],
                "daily_limit": real["daily_limit"],
            } == {
                "coins": account.coins,
                "diamonds": account.diamonds,
                "owed": account.owed,
                "received": account.received,
                "spent_today": account.spent_today,
                "daily_limit": account.limit,
            }, user
        accounts = self.run(all_keys(redis, keys.PLATFORM_PATTERN))
        platform = sum(int(self.run(redis.hget(key, "coins")) or 0) for key in accounts)
        assert platform == self.platform
        for stream, expected in self.boards.items():
            rows: list[Any] = self.run(
                redis.zrange(keys.stream_leaderboard(stream), 0, -1, withscores=True)
            )
            assert {member: int(score) for member, score in rows} == +expected, stream
        report = self.run(reconcile(redis, self.settings.economy.creator_share_bps))
        assert report.ok, report.format()


@pytest.mark.timeout(480)  # passing takes seconds; a failure shrinks for up to 5 minutes
@pytest.mark.parametrize("across_slots", list(GIFT_PATHS.values()), ids=list(GIFT_PATHS))
def test_ledger_matches_the_model_and_reconciles(
    redis_url: str, tmp_path: Path, across_slots: bool
) -> None:
    LedgerMachine.redis_url = redis_url
    LedgerMachine.data_dir = tmp_path
    LedgerMachine.across_slots = across_slots
    run_state_machine_as_test(
        LedgerMachine,
        settings=hypothesis.settings(max_examples=30, stateful_step_count=30, deadline=None),
    )


# -- the daily budget when gifts reach Redis out of clock order ---------------------------

MIDNIGHT_MS = 20_001 * DAY_MS
stamps = st.integers(MIDNIGHT_MS - 5, MIDNIGHT_MS + 4)  # both sides of one UTC midnight


@pytest.mark.timeout(300)
def test_a_budget_judges_every_gift_on_its_own_day_whatever_order_they_arrive_in(
    redis_url: str, tmp_path: Path
) -> None:
    """Gifts stamped around midnight arrive in any order: each passes exactly when the
    coins already spent on its own UTC day leave room for it, and each day's spending
    reads back whole on both sides of midnight."""
    settings = make_settings(
        redis_url, tmp_path, limits={"gift_rate_per_s": 1_000_000, "gift_burst": 1_000_000}
    )
    rose = settings.gift("rose")
    assert rose is not None

    @hypothesis.settings(max_examples=40, deadline=None)
    @hypothesis.given(
        limit=st.integers(0, 12),
        sends=st.lists(st.tuples(stamps, st.integers(1, 6)), min_size=1, max_size=8),
    )
    def arrivals(limit: int, sends: list[tuple[int, int]]) -> None:
        async def run() -> None:
            now = [MIDNIGHT_MS]
            store = Store(await connect(redis_url, 5.0), settings, clock=lambda: now[0])
            try:
                await store.redis.flushall()
                await streams.start_stream(store, "t1", "s1")
                await payments.apply_payment(store, "v1", "e1", SUCCEEDED, "coins_1000")
                await wallet.set_daily_limit(store, "v1", limit)
                spent: Counter[int] = Counter()
                for i, (stamp, count) in enumerate(sends):
                    now[0] = stamp
                    day = stamp // DAY_MS
                    call = gifts.run_send_gift(store, viewer("v1"), "s1", rose, count, f"k{i}")
                    if spent[day] + count <= limit:
                        await call
                        spent[day] += count
                    else:
                        with pytest.raises(GiftingError) as refused:
                            await call
                        assert refused.value.code is ErrorCode.DAILY_LIMIT_EXCEEDED
                for day in (MIDNIGHT_MS // DAY_MS - 1, MIDNIGHT_MS // DAY_MS):
                    now[0] = day * DAY_MS + 1
                    seen = await wallet.read_wallet(store, "v1")
                    assert seen["spent_today"] == spent[day], (day, spent)
            finally:
                await store.close()

        asyncio.run(run())

    arrivals()
