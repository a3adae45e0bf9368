"""Which gifts a worker takes: one bound per user, one `Admission` per master.

Two rules come before a gift reaches Redis, each so that no one's trouble refuses
everyone's gifts:

- **Per user.** At most `[overload] max_in_flight_per_user` gifts of one user are
  under way in this worker; the next is refused `rate_limited` with
  `retry_after_ms`. The user's own limits (rate, funds, budget) are checked by the
  script, after the gift took a place in flight: without this bound one token with
  no coins could fill every place with gifts the script then refuses.
- **Per master.** On a Redis Cluster each master has its own queue (its pipelined
  connection, `cluster_pipeline.py`), so each has its own account (`Admission`):
  a master that hangs (failing over, paused) refuses only the gifts that have a
  step on it, and the other masters keep taking theirs. A gift in flight holds a
  place in the account of the master its current step runs on (`GiftInFlight.at`),
  so a gift stuck on one master is in no other's queue. On one Redis there is one
  account, and a gift holds its place there from admission to its answer.

See docs/overload.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable

from gifting_server import metrics
from gifting_server.config import Overload
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger.admission import Admission, overloaded_error, overloaded_message
from gifting_server.loop_lag import LoopLag

# The master a key's calls go to (an address), or None when it is not known yet.
MasterOf = Callable[[str], Hashable | None]
# A gift's next call goes to this key's master (`GiftInFlight.at`, or `anywhere`).
StepAt = Callable[[str], None]
# A gift refused before its task (`GiftAdmission.refused_now`): the code, retry_after_ms.
Refused = tuple[ErrorCode, int]


def one_redis(key: str) -> None:
    return None


class GiftAdmission:
    """One per worker (`Store.admission`)."""

    def __init__(
        self,
        limits: Overload,
        master_of: MasterOf = one_redis,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.master_of = master_of
        self.clock = clock
        # master → its account; a master not known yet (no slot map read) shares None's
        self.accounts: dict[Hashable | None, Admission] = {}
        self.loop_lag = LoopLag()  # one for every account: they share the loop
        # On one Redis its only account, asked without looking up any key's master.
        self.only: Admission | None = None
        if master_of is one_redis:
            self.only = self.accounts[None] = Admission(limits, clock, self.loop_lag)
        self.users: dict[str, int] = {}  # user → their gifts under way in this worker
        self.refused_per_user = metrics.GIFTS_REFUSED_OVERLOADED.labels(reason="user_in_flight")

    def account(self, key: str) -> Admission:
        """The account of the master `key`'s calls go to."""
        if self.only is not None:
            return self.only
        master = self.master_of(key)
        account = self.accounts.get(master)
        if account is None:
            account = self.accounts[master] = Admission(self.limits, self.clock, self.loop_lag)
        return account

    def refused_now(self, user_id: str, keys: Iterable[str]) -> Refused | None:
        """How a gift of `user_id` with steps on `keys`' masters arriving now is
        refused (counted), or None when it may go: what the WebSocket edge asks before
        it starts a gift's task, so that a refusal is cheap (no exception). On one
        Redis `keys` is not read (there is one account)."""
        if self.users.get(user_id, 0) >= self.limits.max_in_flight_per_user:
            return self._user_refused()
        retry_after_ms = self.master_refused(keys)
        return None if retry_after_ms is None else (ErrorCode.SERVICE_UNAVAILABLE, retry_after_ms)

    def user_turn(self, user_id: str) -> UserTurn:
        """Count the block as one of the user's gifts under way, or raise
        `rate_limited` at once when they have `max_in_flight_per_user` already."""
        return UserTurn(self, user_id)

    def admit(self, keys: list[str]) -> GiftInFlight:
        """Hold a place in flight for the block (a gift's calls to Redis), at the
        master of `keys[0]` (its first step), or raise `service_unavailable` at once,
        before anything reaches Redis, when the master of any of `keys` is past its
        ceiling."""
        return GiftInFlight(self, keys)

    def master_refused(self, keys: Iterable[str], asked: Iterable[Admission] = ()) -> int | None:
        """The `retry_after_ms` of the first refusal of the masters of `keys` not among
        `asked`, counted; on one Redis, of its one account."""
        if self.only is not None:
            return None if self.only in asked else self.only.refused_now()
        seen = set(asked)
        for key in keys:
            account = self.account(key)
            if account in seen:
                continue
            seen.add(account)
            retry_after_ms = account.refused_now()
            if retry_after_ms is not None:
                return retry_after_ms
        return None

    def _user_refused(self) -> Refused:
        self.refused_per_user.inc()
        return ErrorCode.RATE_LIMITED, self.limits.retry_after_min_ms


def refusal_message(code: ErrorCode, retry_after_ms: int) -> str:
    """The text of a refusal for load: past the worker's ceiling, or past the user's
    bound on gifts under way."""
    if code is ErrorCode.RATE_LIMITED:
        # The user's own gifts under way end within about a round trip to Redis:
        # the soonest retry any refusal asks for is time enough.
        return (
            f"too many of your gifts are under way at once; nothing was changed; retry "
            f"with the same key in {retry_after_ms} ms"
        )
    return overloaded_message(retry_after_ms)


def refusal_error(code: ErrorCode, retry_after_ms: int) -> GiftingError:
    return GiftingError(code, refusal_message(code, retry_after_ms), retry_after_ms=retry_after_ms)


class UserTurn:
    """`GiftAdmission.user_turn`. A class, not a generator: it is entered once per gift,
    and a generator's context manager costs several times as much."""

    def __init__(self, admission: GiftAdmission, user_id: str) -> None:
        self.users = admission.users
        self.admission = admission
        self.user_id = user_id

    def __enter__(self) -> None:
        held = self.users.get(self.user_id, 0)
        if held >= self.admission.limits.max_in_flight_per_user:
            raise refusal_error(*self.admission._user_refused())
        self.users[self.user_id] = held + 1

    def __exit__(self, *exc_info: object) -> None:
        left = self.users[self.user_id] - 1
        if left:
            self.users[self.user_id] = left
        else:
            del self.users[self.user_id]


class GiftInFlight:
    """An admitted gift's place in flight: in the account of the master of its
    current step. Taken on entering the block (`GiftAdmission.admit`), given back on
    leaving it."""

    def __init__(self, admission: GiftAdmission, keys: list[str]) -> None:
        self.admission = admission
        self.keys = keys

    def __enter__(self) -> GiftInFlight:
        admission = self.admission
        # The error is built in the raise, never held by a local: its traceback holds
        # this frame, and a frame holding the error would make every refusal a
        # reference cycle, freed only by the garbage collector (collector.py).
        retry_after_ms = admission.master_refused(self.keys)
        if retry_after_ms is not None:
            raise overloaded_error(retry_after_ms)
        self.asked = {admission.account(key) for key in self.keys}
        self.account = admission.account(self.keys[0])
        self.place = self.account.enter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def also(self, key: str) -> None:
        """The gift has a step on `key`'s master too (known once the stream's owner
        is read): refused now, before anything is written, if that master is past
        its ceiling."""
        retry_after_ms = self.admission.master_refused([key], self.asked)
        if retry_after_ms is not None:
            raise overloaded_error(retry_after_ms)  # no local holds it: as in __enter__
        self.asked.add(self.admission.account(key))

    def at(self, key: str) -> None:
        """The gift's next call goes to `key`'s master: its place moves there."""
        account = self.admission.account(key)
        if account is self.account:
            return
        self.account.leave(self.place)
        self.account = account
        self.place = account.enter()

    def close(self) -> None:
        self.account.leave(self.place)


def anywhere(key: str) -> None:
    """`GiftInFlight.at` for calls no admitted gift makes (the relay's)."""
