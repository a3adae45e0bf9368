"""Admission of gifts: past its ceiling a worker refuses the excess at once.

Without it, gifts offered faster than Redis and this worker carry them queue in
the script pipeline; every gift waits behind all the others, the oldest pass the
request timeout, and the pipeline then fails every call in flight at once: the
worker acknowledges fewer gifts than at its ceiling, and late. Here a gift is
refused before it reaches Redis (`service_unavailable` with `retry_after_ms`, so
nothing changed and the same idempotency key is taken later) when

- the queue stands: the oldest gift in flight has waited longer than the base
  latency (the least a gift took lately with fewer than `min_in_flight` in flight)
  plus `queue_target_ms`, and more gifts are in flight than the worker finished in
  that long at its measured pace, and more than `min_in_flight` (one slow gift, or
  a burst on an idle worker, is not a standing queue; a paused Redis is: its pace
  falls to nothing), or
- `max_in_flight` gifts are in flight, whatever their age.

The gifts taken keep the pipeline full, so the worker still acknowledges as many
as it can, each within about the target. On a cluster each master has its own
`Admission`, and one user's gifts under way are bounded before any of this
(`gift_admission.py`). Payments and cash-outs do not come here:
they are rare, never refused for load, and wait behind at most the target's worth
of gifts. See docs/overload.md.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count

from gifting_server import metrics
from gifting_server.config import Overload
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.loop_lag import LoopLag

# The pace is measured over the last one to two windows of this length.
WINDOW_S = 0.5
# The base latency: over the last one to two windows of this length.
BASE_WINDOW_S = 5.0


class Pace:
    """How many events per second happened over the last one to two windows."""

    def __init__(self, now: float) -> None:
        self.born = now  # no window before it: the first one's pace is not diluted
        self.started = now  # the current window's start
        self.current = 0
        self.previous = 0

    def add(self, now: float) -> None:
        self._roll(now)
        self.current += 1

    def total(self, now: float) -> int:
        """The events of the current window and the one before it."""
        self._roll(now)
        return self.current + self.previous

    def per_s(self, now: float) -> float:
        self._roll(now)
        span = now - max(self.started - WINDOW_S, self.born)
        return (self.current + self.previous) / span if span > 0 else 0.0

    def _roll(self, now: float) -> None:
        elapsed = now - self.started
        if elapsed < WINDOW_S:
            return
        # a whole window with nothing happening forgets the one before it
        self.previous = self.current if elapsed < 2 * WINDOW_S else 0
        self.current = 0
        self.started = now - elapsed % WINDOW_S


class BaseLatency:
    """How long a gift takes with no queue in front of it (a round trip to Redis and
    its fsync): the least latency of the gifts taken while few were in flight, over
    the last one to two `BASE_WINDOW_S`; the last one known when none was taken so."""

    def __init__(self, now: float) -> None:
        self.started = now
        self.current = math.inf
        self.previous = math.inf
        self.known = 0.0

    def add(self, latency_s: float, now: float) -> None:
        self._roll(now)
        self.current = min(self.current, latency_s)
        self.known = min(self.current, self.previous)

    def _roll(self, now: float) -> None:
        elapsed = now - self.started
        if elapsed < BASE_WINDOW_S:
            return
        self.previous = self.current if elapsed < 2 * BASE_WINDOW_S else math.inf
        self.current = math.inf
        self.started = now - elapsed % BASE_WINDOW_S


def overloaded_message(retry_after_ms: int) -> str:
    return (
        f"the server is overloaded; nothing was changed; retry with the same key in "
        f"{retry_after_ms} ms"
    )


def overloaded_error(retry_after_ms: int) -> GiftingError:
    return GiftingError(
        ErrorCode.SERVICE_UNAVAILABLE,
        overloaded_message(retry_after_ms),
        retry_after_ms=retry_after_ms,
    )


@dataclass(slots=True)
class Place:
    """A gift's place in flight: when it took it, and whether few were in flight then
    (its latency is then the base latency's to learn from). Not frozen: a frozen
    dataclass sets each field through `object.__setattr__`, and a gift takes a place
    at each step (on a cluster, one a master): enter and leave 3.4 → 1.8 µs."""

    ticket: int
    since: float
    unqueued: bool


class Admission:
    """The gifts a worker has in flight to one Redis (on a cluster, to one master:
    `gift_admission.py` keeps one per master), and the rule that refuses more."""

    def __init__(
        self,
        limits: Overload,
        clock: Callable[[], float] = time.monotonic,
        loop_lag: LoopLag | None = None,
    ) -> None:
        self.limits = limits
        self.clock = clock
        self.loop_lag = loop_lag or LoopLag()
        self.target_s = limits.queue_target_ms / 1000
        self.lag_target_s = limits.loop_lag_target_ms / 1000
        # ticket → when it was admitted; dicts keep insertion order: the first is oldest
        self.in_flight: dict[int, float] = {}
        self.tickets = count()
        now = clock()
        self.finished = Pace(now)
        self.refused = Pace(now)
        self.base = BaseLatency(now)
        self.counters = {
            reason: metrics.GIFTS_REFUSED_OVERLOADED.labels(reason=reason)
            for reason in ("in_flight", "loop_lag", "queue_delay")
        }

    @contextmanager
    def admit(self) -> Iterator[None]:
        """Hold a place in flight for the block (a gift's calls to Redis), or raise
        `service_unavailable` at once, before anything reaches Redis."""
        refusal = self.refusal()
        if refusal is not None:
            raise refusal
        place = self.enter()
        try:
            yield
        finally:
            self.leave(place)

    def enter(self) -> Place:
        """Take a place in flight, unasked: for a gift admitted already (`admit`, or
        `gift_admission.GiftInFlight` when its next call goes to this master)."""
        now = self.clock()
        place = Place(next(self.tickets), now, len(self.in_flight) < self.limits.min_in_flight)
        self.in_flight[place.ticket] = now
        return place

    def leave(self, place: Place) -> None:
        del self.in_flight[place.ticket]
        done = self.clock()
        self.finished.add(done)
        if place.unqueued:
            self.base.add(done - place.since, done)

    def refusal(self, now: float | None = None) -> GiftingError | None:
        """The refusal of a gift arriving now, counted, or None when one may go."""
        retry_after_ms = self.refused_now(now)
        if retry_after_ms is None:
            return None
        return overloaded_error(retry_after_ms)

    def refused_now(self, now: float | None = None) -> int | None:
        """The `retry_after_ms` of a gift arriving now, refused and counted, or None when
        one may go: `refusal` without its exception. The WebSocket edge asks this
        before it starts a gift's task, and answers with a frame built once per
        `retry_after_ms` (`protocol.refusal_frame`): a refusal costs next to nothing
        beyond reading the gift and writing the answer."""
        now = self.clock() if now is None else now
        reason = self.overloaded(now)
        if reason is None:
            return None
        self.refused.add(now)
        self.counters[reason].inc()
        return self.retry_after_ms(now)

    def overloaded(self, now: float) -> str | None:
        """Why a gift arriving now is refused ("in_flight", "queue_delay"), or None."""
        waiting = len(self.in_flight)
        if waiting >= self.limits.max_in_flight:
            return "in_flight"
        # The loop itself is late: every gift taken now would wait for it before and
        # after its call to Redis, however short the queue in front of Redis.
        if self.lag_target_s and self.loop_lag.lag() > self.lag_target_s:
            return "loop_lag"
        if not waiting:
            return None
        # The target is the queue's delay on top of the base latency: when every gift
        # takes longer than the target even alone (a slow disk under the AOF's fsync),
        # the worker must still keep enough in flight to fill the pipe.
        limit_s = self.base.known + self.target_s
        oldest = next(iter(self.in_flight.values()))
        if now - oldest <= limit_s:
            return None
        # Never fewer than min_in_flight: when this worker's own CPU is the limit, each
        # gift also waits for the event loop, and a bound of pace x limit alone would
        # shrink with the pace it causes, down to nothing.
        allowed = max(self.finished.per_s(now) * limit_s, self.limits.min_in_flight)
        if waiting > allowed:
            return "queue_delay"
        return None

    def retry_after_ms(self, now: float) -> int:
        """The time this worker needs at its pace for what it holds and what it
        refused lately, within the configured bounds; the longest when it finishes
        nothing (Redis paused or gone)."""
        low, high = self.limits.retry_after_min_ms, self.limits.retry_after_max_ms
        pace = self.finished.per_s(now)
        if pace <= 0:
            return high
        backlog = len(self.in_flight) + self.refused.total(now)
        return max(low, min(high, math.ceil(backlog / pace * 1000)))
