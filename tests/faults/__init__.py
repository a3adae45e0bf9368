"""Fault, abuse and fuzz tests: helpers shared by the modules of this package.

These tests start and kill real processes (redis-server, `gifting-server serve`)
and talk to real servers over real sockets. Nothing is mocked and nothing sleeps
hoping for an outcome: a test waits for the event it expects, with a deadline.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from gifting_server.auth import Role
from gifting_server.ledger import keys
from gifting_server.ledger.reconcile import MOVED_WHILE_READ, reconcile
from tests.factories import auth, post_webhook
from tests.ledger.support import journal_entries

Entry = dict[str, str]

MONEY_PATTERNS = (
    "{u:*}:wallet", "{u:*}:cashouts", "{u:*}:purchases", keys.PLATFORM_PATTERN,
    keys.LEGACY_PLATFORM_ACCOUNT,
)  # fmt: skip


async def money_state(redis: Redis) -> dict[str, Any]:
    """Everything that is money: the journal's length, every wallet, cash-out and
    purchase record, the platform account, and the idempotency and payment records.
    Equal states before and after a refused request = it changed nothing."""
    state: dict[str, Any] = {"journal": len(await journal(redis))}
    for pattern in MONEY_PATTERNS:
        async for key in redis.scan_iter(match=pattern, count=1000):
            state[str(key)] = await redis.hgetall(key)
    for pattern in ("{u:*}:idem:*", keys.payment_seen("*"), keys.USER_PAYMENT_PATTERN):
        state[pattern] = sorted([str(k) async for k in redis.scan_iter(match=pattern, count=1000)])
    return state


def money_state_sync(redis: SyncRedis) -> dict[str, Any]:
    """`money_state` over a blocking client, for tests that run no event loop."""
    journals = [keys.LEGACY_JOURNAL, *redis.scan_iter(match=keys.JOURNAL_PATTERN)]
    state: dict[str, Any] = {"journal": sum(redis.xlen(k) for k in journals)}
    for pattern in MONEY_PATTERNS:
        for key in redis.scan_iter(match=pattern, count=1000):
            state[str(key)] = redis.hgetall(key)
    for pattern in ("{u:*}:idem:*", keys.payment_seen("*"), keys.USER_PAYMENT_PATTERN):
        state[pattern] = sorted(str(k) for k in redis.scan_iter(match=pattern, count=1000))
    return state


async def journal(redis: Redis) -> list[Entry]:
    return await journal_entries(redis)


# What reconcile reports of a gift across slots that a crash left half done (debited
# and not credited, or credited and still in its outbox): a running worker's relay
# finishes it within seconds (FAST_RELAY: about 3 s).
RELAY_LEFTOVER = re.compile(
    r"^gift transfer \S+: (credited, but still in its outbox|.* not yet credited) "
    r"\(a running worker's relay"
)
RELAY_SETTLES_S = 20.0
# A relay for the tests that crash Redis under load: a transfer idle for 1 s is taken
# for abandoned, and a pass every 0.25 s covers every slot's outbox in 2 s.
FAST_RELAY = {"relay_after_ms": 1000, "relay_every_s": 0.25, "relay_slots_per_pass": 2048}


async def assert_reconciled(redis: Redis, share_bps: int = 5000) -> None:
    """The ledger reconciles. Only the outbox leftovers the relay clears are waited
    for, with a deadline; any other problem fails at once."""
    deadline = time.monotonic() + RELAY_SETTLES_S
    while True:
        report = await reconcile(redis, share_bps)
        if report.ok:
            return
        # A transfer credited while the audit read makes other figures differ too
        # (its reads are not one snapshot): only a report read on a settled ledger is final.
        moved = any(MOVED_WHILE_READ in problem for problem in report.problems)
        transient = moved or all(RELAY_LEFTOVER.match(p) for p in report.problems)
        if not transient or time.monotonic() > deadline:
            raise AssertionError(report.format())
        await asyncio.sleep(0.1)


async def wait_until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll `check` (plain or async) until it answers something other than None or
    False; fail after `timeout` seconds, naming `what` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


# -- the API, as a client calls it ----------------------------------------------------------


async def go_live(
    http: httpx.AsyncClient, stream_id: str = "s1", streamer: str = "streamer1"
) -> None:
    response = await http.post(
        "/v1/streams", json={"stream_id": stream_id}, headers=auth(streamer, Role.STREAMER)
    )
    assert response.status_code in (200, 201), response.text


def purchase(
    event_id: str, user_id: str, package_id: str = "coins_100", **extra: Any
) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "type": "payment.succeeded",
        "user_id": user_id,
        "package_id": package_id,
        **extra,
    }


def refund(event_id: str, user_id: str, package_id: str = "coins_100") -> dict[str, Any]:
    return {**purchase(event_id, user_id, package_id), "type": "payment.refunded"}


async def buy(
    http: httpx.AsyncClient, user_id: str, package_id: str = "coins_100", event_id: str = ""
) -> None:
    body = purchase(event_id or f"buy-{user_id}-{package_id}", user_id, package_id)
    response = await post_webhook(http, dict(body))
    assert response.status_code == 200, response.text


async def send_gift(
    http: httpx.AsyncClient,
    user_id: str,
    key: str,
    gift_id: str = "rose",
    count: int = 1,
    stream_id: str = "s1",
    **token_claims: Any,
) -> httpx.Response:
    body = {"gift_id": gift_id, "count": count, "idempotency_key": key}
    return await http.post(
        f"/v1/streams/{stream_id}/gifts", json=body, headers=auth(user_id, **token_claims)
    )


async def balances(redis: Redis, *users: str) -> dict[str, Any]:
    return {user: await redis.hgetall(keys.wallet(user)) for user in users}
