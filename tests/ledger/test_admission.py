"""The admission rule alone, on a clock the test moves: which gift is refused, why,
and the retry_after_ms it is told. The refusals end to end, with a paused Redis
and real sockets: tests/faults/test_overload.py."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from contextlib import ExitStack

import pytest

from gifting_server.config import Overload
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger.admission import WINDOW_S, Admission, Pace

LIMITS = Overload(
    queue_target_ms=50,
    loop_lag_target_ms=25,
    min_in_flight=10,
    max_in_flight=100,
    retry_after_min_ms=250,
    retry_after_max_ms=10_000,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def hold(admission: Admission, gifts: int, stack: ExitStack) -> None:
    """`gifts` gifts enter and stay in flight until `stack` closes."""
    for _ in range(gifts):
        stack.enter_context(admission.admit())


def finish(admission: Admission, clock: Clock, gifts: int, every_s: float) -> None:
    """`gifts` gifts in turn, each in flight for `every_s`: a measured pace."""
    for _ in range(gifts):
        with admission.admit():
            clock.now += every_s


def refused(admission: Admission) -> GiftingError:
    with pytest.raises(GiftingError) as refusal, admission.admit():
        raise AssertionError("admitted")
    return refusal.value


def test_a_burst_on_an_idle_worker_is_taken_whole(clock: Clock) -> None:
    admission = Admission(LIMITS, clock)
    with ExitStack() as stack:
        hold(admission, 99, stack)
        assert admission.overloaded(clock.now) is None


def test_max_in_flight_refuses_the_next_gift_whatever_its_age(clock: Clock) -> None:
    admission = Admission(LIMITS, clock)
    with ExitStack() as stack:
        hold(admission, 100, stack)
        error = refused(admission)
        assert admission.overloaded(clock.now) == "in_flight"
    assert error.code is ErrorCode.SERVICE_UNAVAILABLE
    assert error.retry_after_ms is not None
    assert LIMITS.retry_after_min_ms <= error.retry_after_ms <= LIMITS.retry_after_max_ms
    with admission.admit():  # the places are free again
        pass


def test_one_slow_gift_among_quick_ones_is_no_standing_queue(clock: Clock) -> None:
    admission = Admission(LIMITS, clock)
    finish(admission, clock, 400, 0.001)  # 1,000 gifts/s
    with ExitStack() as stack:
        hold(admission, 1, stack)
        finish(admission, clock, 1000, 0.001)  # it waits a second, far past the target,
        assert admission.overloaded(clock.now) is None  # while the others go on


def test_a_standing_queue_past_the_target_refuses_new_gifts(clock: Clock) -> None:
    admission = Admission(LIMITS, clock)
    finish(admission, clock, 400, 0.001)  # 1,000 gifts/s: 50 finish within the target
    with ExitStack() as stack:
        hold(admission, 60, stack)
        assert admission.overloaded(clock.now) is None  # none has waited yet
        clock.now += 0.045  # the target and the base latency (1 ms) not yet passed
        assert admission.overloaded(clock.now) is None
        clock.now += 0.01
        assert admission.overloaded(clock.now) == "queue_delay"
        error = refused(admission)
    # 60 in flight and 1 refused, at about 1,000 gifts/s: about 61 ms, raised to the floor
    assert error.retry_after_ms == LIMITS.retry_after_min_ms


def test_retry_after_grows_with_what_was_refused(clock: Clock) -> None:
    admission = Admission(LIMITS, clock)
    finish(admission, clock, 400, 0.001)
    with ExitStack() as stack:
        hold(admission, 60, stack)
        clock.now += 0.055
        answers = [refused(admission).retry_after_ms for _ in range(2000)]
        pace = admission.finished.per_s(clock.now)  # about 1,000 gifts/s
    assert answers == sorted(answers)
    assert answers[0] == LIMITS.retry_after_min_ms
    # 60 in flight and 2,000 refused, at that pace
    assert answers[-1] == pytest.approx(2060 / pace * 1000, abs=1)
    assert LIMITS.retry_after_min_ms < answers[-1] < LIMITS.retry_after_max_ms


def test_a_stalled_redis_refuses_and_says_the_longest_retry(clock: Clock) -> None:
    admission = Admission(LIMITS, clock)
    finish(admission, clock, 100, 0.001)
    with ExitStack() as stack:
        hold(admission, 11, stack)
        clock.now += 2 * WINDOW_S  # nothing finished for two windows: the pace is 0
        assert admission.overloaded(clock.now) == "queue_delay"
        assert refused(admission).retry_after_ms == LIMITS.retry_after_max_ms
    # the stalled gift came back (an answer or a timeout): nothing waits, all is taken
    with admission.admit():
        pass


def test_min_in_flight_are_never_refused_for_their_delay(clock: Clock) -> None:
    """A worker whose own CPU is the limit: every gift waits for its event loop, past
    the target, and its pace is low. The bound stays at min_in_flight."""
    admission = Admission(LIMITS, clock)
    finish(admission, clock, 10, 0.1)  # 10 gifts/s, each 100 ms
    with ExitStack() as stack:
        hold(admission, 10, stack)
        clock.now += 0.2  # past the base latency and the target
        assert admission.overloaded(clock.now) is None
        hold(admission, 1, stack)
        assert admission.overloaded(clock.now) == "queue_delay"


def test_a_slow_redis_raises_the_bar_by_its_own_latency(clock: Clock) -> None:
    """Each write takes 500 ms (a slow fsync) however many gifts it carries: the
    gifts wait far past the target with no queue at all, and the worker keeps about
    pace x (base + target) in flight, not pace x target (9, or min_in_flight's 10)."""
    admission = Admission(dataclasses.replace(LIMITS, max_in_flight=1000), clock)
    for _ in range(3):  # 100 gifts a write, one write every 500 ms
        with ExitStack() as write:
            hold(admission, 100, write)
            clock.now += 0.5
    assert admission.base.known == 0.5
    with ExitStack() as stack:
        hold(admission, 90, stack)
        clock.now += 0.56  # past the base latency and the target: 178 gifts/s lately
        assert admission.overloaded(clock.now) is None  # 90 of 178/s x 550 ms
        with pytest.raises(GiftingError):
            hold(admission, 20, stack)
        assert admission.overloaded(clock.now) == "queue_delay"


def test_a_refused_gift_never_runs_its_block(clock: Clock) -> None:
    admission = Admission(Overload(max_in_flight=1), clock)
    ran = []
    with admission.admit(), pytest.raises(GiftingError), admission.admit():
        ran.append("refused gift")
    assert ran == []
    assert admission.in_flight == {}


def test_the_pace_is_the_recent_rate_from_the_first_gift_on(clock: Clock) -> None:
    pace = Pace(clock.now)
    for _ in range(100):  # 1,000/s for 0.1 s, on a worker that just started
        clock.now += 0.001
        pace.add(clock.now)
    assert pace.per_s(clock.now) == pytest.approx(1000)
    for _ in range(1000):  # 1,000/s on
        clock.now += 0.001
        pace.add(clock.now)
    assert pace.per_s(clock.now) == pytest.approx(1000, rel=0.01)
    clock.now += 2 * WINDOW_S  # then nothing for two windows
    assert pace.per_s(clock.now) == 0


async def test_a_standing_loop_lag_refuses_new_gifts_with_none_in_flight() -> None:
    """The worker's own loop is late pass after pass (its CPU is the limit): a gift
    taken now would wait for it before and after Redis, however short Redis's queue.
    The loop is really blocked here, twice in a row, past `loop_lag_target_ms`."""
    admission = Admission(LIMITS)  # the real clock
    assert admission.refusal() is None  # the first ask starts the loop's timer
    block_s = 2 * LIMITS.loop_lag_target_ms / 1000
    tick = admission.loop_lag.due
    time.sleep(block_s)
    while admission.loop_lag.due == tick:  # the timer ran, late
        await asyncio.sleep(0)
    assert admission.refusal() is None  # one pause is not a standing lag
    time.sleep(block_s)  # late again
    assert admission.overloaded(time.monotonic()) == "loop_lag"
    error = refused(admission)
    assert error.code is ErrorCode.SERVICE_UNAVAILABLE
    assert error.retry_after_ms is not None
    assert LIMITS.retry_after_min_ms <= error.retry_after_ms <= LIMITS.retry_after_max_ms
    async with asyncio.timeout(10):  # the loop runs on time again: gifts are taken
        while admission.loop_lag.lag() > LIMITS.loop_lag_target_ms / 1000:
            await asyncio.sleep(0)
    with admission.admit():
        pass
