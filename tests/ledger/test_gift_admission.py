"""Which gifts a worker takes, on a clock the test moves: one user's gifts under way
are bounded, and on a cluster each master keeps its own account, so that neither one
user nor one master refuses everyone's gifts. End to end: tests/faults/
test_user_flood.py (one user floods) and tests/cluster/test_cluster_admission.py
(one master paused)."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from contextlib import ExitStack, suppress

import pytest

from gifting_server.config import Overload, Settings
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, wallet
from gifting_server.ledger.gift_admission import GiftAdmission, GiftInFlight
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, viewer
from tests.ledger.test_admission import Clock

LIMITS = Overload(
    queue_target_ms=50,
    min_in_flight=0,
    max_in_flight=3,
    max_in_flight_per_user=2,
    retry_after_min_ms=250,
    retry_after_max_ms=10_000,
)


def on_masters(key: str) -> str:
    """A key's master in these tests: the letter after its "@" ("x@b" is on b)."""
    return key.rpartition("@")[2]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """A bound below the script's burst (the default is the burst itself), so that
    what the bound refuses and what the script's rate refuses stay apart."""
    overload = dataclasses.replace(settings.overload, max_in_flight_per_user=8)
    return dataclasses.replace(settings, overload=overload)


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_one_users_gifts_under_way_are_bounded_and_anothers_still_go(clock: Clock) -> None:
    admission = GiftAdmission(LIMITS, clock=clock)
    with ExitStack() as flood:
        for _ in range(2):
            flood.enter_context(admission.user_turn("mallory"))
        with pytest.raises(GiftingError) as refused, admission.user_turn("mallory"):
            raise AssertionError("admitted")
        assert refused.value.code is ErrorCode.RATE_LIMITED
        assert refused.value.retry_after_ms == LIMITS.retry_after_min_ms
        refused = admission.refused_now("mallory", ["s@a"])  # the WebSocket's early question
        assert refused == (ErrorCode.RATE_LIMITED, LIMITS.retry_after_min_ms)
        assert admission.refused_now("alice", ["s@a"]) is None
        with admission.user_turn("alice"):
            pass
    with admission.user_turn("mallory"):  # her gifts ended: her turns are free again
        pass
    assert admission.users == {}


def test_a_master_past_its_ceiling_refuses_only_gifts_with_a_step_on_it(clock: Clock) -> None:
    admission = GiftAdmission(LIMITS, on_masters, clock)
    with ExitStack() as stuck:
        for _ in range(3):  # max_in_flight on master a
            stuck.enter_context(admission.admit(["w@a"]))
        with pytest.raises(GiftingError) as refused, admission.admit(["s@b", "w@a"]):
            raise AssertionError("admitted with its debit on a full master")
        assert refused.value.code is ErrorCode.SERVICE_UNAVAILABLE
        with admission.admit(["s@b", "w@c"]) as gift:  # b and c take theirs
            with pytest.raises(GiftingError):
                gift.also("streamer@a")  # its credit would go to a: refused before it
            gift.also("streamer@c")
            assert admission.account("x@b").in_flight
    assert all(not account.in_flight for account in admission.accounts.values())


def test_a_refused_gift_leaves_no_reference_cycle(clock: Clock) -> None:
    """Past the ceiling most gifts are refused: were each refusal a cycle (its error's
    traceback holding a frame that holds the error), the garbage collector would run
    far more often, stopping the loop each time (gifting_server/collector.py)."""
    admission = GiftAdmission(LIMITS, on_masters, clock)
    with ExitStack() as stuck:
        for _ in range(3):  # max_in_flight on master a
            stuck.enter_context(admission.admit(["w@a"]))
        for _ in range(2):  # max_in_flight_per_user
            stuck.enter_context(admission.user_turn("mallory"))
        gc.collect()
        try:
            with admission.admit(["s@a"]):
                raise AssertionError("admitted on a full master")
        except GiftingError:
            pass
        with admission.admit(["s@b"]) as gift, suppress(GiftingError):
            gift.also("streamer@a")
        try:
            with admission.user_turn("mallory"):
                raise AssertionError("admitted past her bound")
        except GiftingError:
            pass
        assert gc.collect() == 0  # nothing was left for the collector to find


def test_a_gift_holds_its_place_at_the_master_of_its_current_step_only(clock: Clock) -> None:
    admission = GiftAdmission(LIMITS, on_masters, clock)
    a, b = admission.account("x@a"), admission.account("x@b")
    with admission.admit(["s@a", "w@b"]) as gift:
        assert (len(a.in_flight), len(b.in_flight)) == (1, 0)
        clock.now += 0.002
        gift.at("w@b")
        assert (len(a.in_flight), len(b.in_flight)) == (0, 1)
        assert a.finished.total(clock.now) == 1  # its step on a counts in a's pace
        gift.at("w2@b")  # the same master: nothing moves
        assert len(b.in_flight) == 1
    assert (len(a.in_flight), len(b.in_flight)) == (0, 0)


def test_one_redis_keeps_one_account_for_the_whole_gift(clock: Clock) -> None:
    admission = GiftAdmission(LIMITS, clock=clock)
    with admission.admit(["s", "w"]) as gift:
        gift.at("w")
        gift.at("streamer")
        assert isinstance(gift, GiftInFlight)
        assert list(admission.accounts) == [None]
        assert len(admission.accounts[None].in_flight) == 1


async def test_one_users_gifts_sent_at_once_reach_redis_at_most_the_bound(store: Store) -> None:
    """More gifts of one viewer than the bound, in one pass of the loop (on one Redis,
    one send_gifts batch; or each in its steps across slots) and one of another: the bound of the
    first reach the script, the rest are refused at once having written nothing, and
    go through later with their keys."""
    bound = store.settings.overload.max_in_flight_per_user
    sent = 20
    await live_stream(store)
    for user in ("alice", "bob"):
        await fund(store, user)

    def send(user: str, key: str) -> asyncio.Future[gifts.GiftReceipt]:
        return asyncio.ensure_future(gifts.send_gift(store, viewer(user), "s1", "rose", 1, key))

    flood = [send("alice", f"k{n}") for n in range(sent)]
    other = send("bob", "b1")
    answers = await asyncio.gather(*flood, return_exceptions=True)
    taken = [n for n, a in enumerate(answers) if isinstance(a, gifts.GiftReceipt)]
    refused = [a for a in answers if isinstance(a, GiftingError)]
    assert taken == list(range(bound))  # the first ones: in the order they came
    assert len(refused) == sent - bound
    assert {e.code for e in refused} == {ErrorCode.RATE_LIMITED}
    assert {e.retry_after_ms for e in refused} == {store.settings.overload.retry_after_min_ms}
    assert (await other).coins == 99
    assert (await wallet.read_wallet(store, "alice"))["coins"] == 100 - bound
    assert store.admission.users == {}
    for n in range(bound, sent):
        receipt = await gifts.send_gift(store, viewer("alice"), "s1", "rose", 1, f"k{n}")
        assert not receipt.replayed
    assert (await wallet.read_wallet(store, "alice"))["coins"] == 100 - sent
