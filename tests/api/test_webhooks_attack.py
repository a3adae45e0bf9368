"""Outgoing webhooks as a hostile or unlucky client meets them: registrations raced
against each other, receivers that hang, answer late or go away, two workers, every
kind of event, and what held. (Where a webhook may be sent: test_webhooks_egress_attack.py.)"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gifting_server.auth import Identity, Role
from gifting_server.config import ConfigError, Settings
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys
from gifting_server.ledger.gifts import send_gift
from gifting_server.ledger.store import Store
from gifting_server.webhooks import endpoints
from gifting_server.webhooks.deliver import Deliverer
from gifting_server.webhooks.egress import parse_target
from tests.api import assert_error
from tests.api.test_http_flow import ALICE, STREAMER, gift, go_live
from tests.api.test_webhooks import (
    FAST_WEBHOOKS,
    gifts,
    history,
    listed,
    live_and_funded,
    register,
    snapshot,
)
from tests.conftest import ServerThread
from tests.factories import auth, fund, live_stream, token, viewer
from tests.faults import wait_until
from tests.hub.wsclient import WsClient
from tests.test_config import load
from tests.topology import AsyncClient
from tests.webhook_receiver import Receiver, receiving


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The store's: at most 3 endpoints per streamer (test_concurrent_registrations_...)."""
    bounded = dataclasses.replace(settings.webhooks, allow_private=True, max_per_streamer=3)
    return dataclasses.replace(settings, webhooks=bounded)


@pytest.fixture
async def http(start: Any) -> AsyncIterator[httpx.AsyncClient]:
    server: ServerThread = start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def test_concurrent_registrations_cannot_pass_max_per_streamer(store: Store) -> None:
    """Registrations arriving together each saw room for one more; the bound is one
    step with the registration, or it is no bound."""
    await live_stream(store, "s1", "streamer1")
    who = Identity("streamer1", "Streamer One", Role.STREAMER)
    target = parse_target("http://127.0.0.1:9/hook")

    async def register(i: int) -> str:
        try:
            await endpoints.register(store, who, "s1", target, ("gift",), f"race-{i}")
        except GiftingError as e:
            assert e.code is ErrorCode.INVALID_REQUEST, e
            return "refused"
        return "created"

    outcomes = await asyncio.gather(*(register(i) for i in range(12)))
    assert outcomes.count("created") == 3
    assert len(await endpoints.list_for(store, who)) == 3
    assert await store.redis.hlen(keys.streamer_webhooks("streamer1")) == 3


async def test_a_registration_refused_for_the_bound_leaves_its_key_unused(
    start: Any, receiver: Receiver, redis: AsyncClient
) -> None:
    server = start(webhooks={**FAST_WEBHOOKS, "max_per_streamer": 1})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await go_live(http, "s1")
        body = {"url": receiver.url, "kinds": ["gift"], "stream_id": "s1"}
        first = await http.post("/v1/webhooks", json=body, headers=STREAMER)
        assert first.status_code == 201, first.text
        state = await snapshot(redis)
        refused = await http.post(
            "/v1/webhooks", json={**body, "idempotency_key": "k"}, headers=STREAMER
        )
        assert_error(refused, 422, "invalid_request")
        assert await snapshot(redis) == state
        deleted = await http.delete(f"/v1/webhooks/{first.json()['webhook_id']}", headers=STREAMER)
        assert deleted.status_code == 200, deleted.text
        other = {**body, "kinds": ["goal"], "idempotency_key": "k"}
        again = await http.post("/v1/webhooks", json=other, headers=STREAMER)
        assert again.status_code == 201, again.text  # not a conflict with the refused one


async def test_concurrent_registrations_with_one_key_make_one_endpoint(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await go_live(http, "s1")
    body = {"url": receiver.url, "kinds": ["gift"], "stream_id": "s1", "idempotency_key": "k"}
    answers = await asyncio.gather(
        *(http.post("/v1/webhooks", json=body, headers=STREAMER) for _ in range(8))
    )
    assert {a.status_code for a in answers} == {201}
    assert len({(a.json()["webhook_id"], a.json()["secret"]) for a in answers}) == 1
    assert len(await listed(http)) == 1
    other = {**body, "kinds": ["goal"]}
    conflict = await http.post("/v1/webhooks", json=other, headers=STREAMER)
    assert_error(conflict, 409, "idempotency_conflict")


async def test_duplicate_kinds_are_one_and_too_many_are_refused(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await go_live(http, "s1")
    body = {"url": receiver.url, "kinds": ["gift", "gift", "goal"], "stream_id": "s1"}
    response = await http.post("/v1/webhooks", json=body, headers=STREAMER)
    assert response.status_code == 201, response.text
    assert response.json()["kinds"] == ["gift", "goal"]
    huge = await http.post(
        "/v1/webhooks", json={**body, "kinds": ["gift"] * 10_000}, headers=STREAMER
    )
    assert_error(huge, 413, "payload_too_large")
    too_many = ["gift"] * (len(endpoints.KINDS) + 1)  # more than every kind there is
    for kinds in (too_many, [["gift"]], [{"gift": 1}], [None], ["GIFT"], ["test"]):
        refused = await http.post("/v1/webhooks", json={**body, "kinds": kinds}, headers=STREAMER)
        assert_error(refused, 422, "invalid_request")


OPPONENT = auth("streamer2", Role.STREAMER)


@pytest.mark.parametrize("lease_ms", [1001, 1100, 1199])
def test_a_lease_that_leaves_no_time_to_start_an_attempt_is_refused_at_load(
    tmp_path: Path, lease_ms: int
) -> None:
    """A round on a stream ends in time for its last attempt (timeout_s) and its
    bookkeeping to end under the lease: a lease barely longer than timeout_s was
    accepted, and its rounds ended before they began; nothing was ever sent."""
    overlay = f"[webhooks]\ntimeout_s = 1.0\nlease_ms = {lease_ms}\n"
    with pytest.raises(ConfigError, match=r"lease_ms must be at least timeout_s \+ 200 ms"):
        load(tmp_path, overlay)
    assert (
        load(tmp_path, "[webhooks]\ntimeout_s = 1.0\nlease_ms = 1200\n").webhooks.lease_ms == 1200
    )


async def test_the_shortest_lease_allowed_still_delivers(start: Any, receiver: Receiver) -> None:
    server = start(webhooks={**FAST_WEBHOOKS, "timeout_s": 1.0, "lease_ms": 1200})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await live_and_funded(http)
        await register(http, receiver)
        sent = await gifts(http, 3)
        events = await receiver.wait_for(3)
        assert [e["event_id"] for e in events] == sent


async def test_every_kind_of_event_reaches_the_receiver_in_the_histories_order(
    start: Any, receiver: Receiver, redis: AsyncClient
) -> None:
    """Each kind comes from another script (emitEvent's callers): every one of them
    feeds the delivery log, and a stream ended and started again goes on delivering
    (its event ids go on counting up, so no message id is used twice)."""
    server = start(limits={"combo_window_ms": 100})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await live_and_funded(http)
        await register(http, receiver, list(endpoints.KINDS))
        async with await WsClient.open(server.url, token("bob")) as watcher:
            await watcher.subscribe("s1")  # viewers and, after a gift, leaderboard
            await gifts(http, 1, "first")  # its streak ends after combo_window_ms
            controls: list[tuple[str, str, dict[str, Any]]] = [
                ("POST", "/v1/streams/s1/alerts", {"action": "pause"}),
                ("PUT", "/v1/streams/s1/goal", {"target": 50}),
                ("PUT", "/v1/streams/s1/settings", {"messages": {"enabled": True}}),
                ("POST", "/v1/streams/s1/overlay-tokens", {"rotate": True}),
                # an invite: a `battle` event on both streams (publish_battle)
                (
                    "POST",
                    "/v1/battles",
                    {
                        "stream_id": "s1",
                        "opponent_stream_id": "s2",
                        "duration_s": 60,
                        "idempotency_key": "battle-1",
                    },
                ),
            ]
            await go_live(http, "s2", OPPONENT)
            for method, path, body in controls:
                answer = await http.request(method, path, json=body, headers=STREAMER)
                assert answer.status_code in (200, 201), answer.text

            def kinds_seen() -> set[str]:
                seen = {e["kind"] for e in receiver.events()}
                if any(e["kind"] == "gift" and e["streak_end"] for e in receiver.events()):
                    seen.add("streak end")  # its own script: close_streaks
                return seen

            await wait_until(
                lambda: kinds_seen() >= {*endpoints.KINDS, "streak end"} - {"stream_ended"},
                15,
                "an event of every kind",
            )
        ended = await http.post("/v1/streams/s1/end", headers=STREAMER)
        assert ended.status_code == 200, ended.text
        await go_live(http, "s1")
        await gifts(http, 1, "again")
        await wait_until(
            lambda: (
                any(
                    e["kind"] == "gift" and e["event_id"] > ended_id(receiver)
                    for e in receiver.events()
                )
                if ended_id(receiver)
                else None
            ),
            15,
            "a gift after the stream started again",
        )
        # Events go on after that gift (its streak's end): wait until every event the
        # history holds now is delivered, then compare with the history read after
        # the delivered events were (it holds each of them: the script that appends
        # an event to the history feeds the delivery log).
        first = receiver.events()[0]["event_id"]
        expected = {i for i in await history(redis) if i >= first}
        await wait_until(
            lambda: {e["event_id"] for e in receiver.events()} >= expected,
            15,
            "every event of the history delivered",
        )
        events = receiver.events()
        in_history = await history(redis)
        ids = [e["event_id"] for e in events]
        assert ids == sorted(ids) and len(ids) == len(set(ids))
        assert all(in_history[e["event_id"]] == e for e in events)
        assert any(e["kind"] == "gift" and e["streak_end"] for e in events)
        assert ids == [i for i in sorted(in_history) if first <= i <= ids[-1]]  # none missed


def ended_id(receiver: Receiver) -> int | None:
    return next((e["event_id"] for e in receiver.events() if e["kind"] == "stream_ended"), None)


async def test_a_hanging_receiver_does_not_hold_back_another_endpoint_of_the_stream(
    start: Any, receiver: Receiver
) -> None:
    """Each endpoint of a stream is delivered on its own: one whose receiver takes
    its whole `timeout_s` to (not) answer must not make another wait as long. The
    lease leaves the round 40 s (lease_ms - timeout_s): the other endpoint's messages
    must come within 10 s, long before the hanging attempt's 20 s, on a slow machine
    too."""
    server = start(webhooks={**FAST_WEBHOOKS, "timeout_s": 20.0, "lease_ms": 60_000})
    async with (
        receiving() as other,
        httpx.AsyncClient(base_url=server.url, timeout=30) as http,
    ):
        await live_and_funded(http)
        await register(http, receiver)
        await register(http, other)
        receiver.hold = True
        try:
            first = await gifts(http, 1, "a")
            await receiver.wait_for_arrivals(1)
            assert [e["event_id"] for e in await other.wait_for(1)] == first

            async def delivered_to_the_other() -> bool:
                states = {w["url"]: w["delivered_through"] for w in await listed(http)}
                return states[other.url] == first[0]

            # Its round then finds nothing more and ends, while the hanging one's goes on.
            await wait_until(delivered_to_the_other, 10, "the first gift recorded as delivered")
            second = await gifts(http, 2, "b")
            events = await other.wait_for(3, timeout=10)  # not after the hanging attempt
            assert [e["event_id"] for e in events] == first + second
            assert receiver.deliveries == []  # its attempt still under way
        finally:
            receiver.release.set()
        assert [e["event_id"] for e in await receiver.wait_for(3)] == first + second


async def test_an_endpoint_registered_while_another_hangs_is_delivered_at_once(
    start: Any, receiver: Receiver
) -> None:
    """A round that began before an endpoint existed, held by a receiver that hangs,
    must not keep the new endpoint's messages until that attempt's 20 s are over
    (the same for an endpoint whose delivery ended before the other's attempt began)."""
    server = start(webhooks={**FAST_WEBHOOKS, "timeout_s": 20.0, "lease_ms": 60_000})
    async with (
        receiving() as late,
        httpx.AsyncClient(base_url=server.url, timeout=30) as http,
    ):
        await live_and_funded(http)
        await register(http, receiver)
        receiver.hold = True
        try:
            await gifts(http, 1, "a")
            await receiver.wait_for_arrivals(1)  # the round is under way, and hangs
            await register(http, late)
            after = await gifts(http, 2, "b")
            events = await late.wait_for(2, timeout=10)
            assert [e["event_id"] for e in events] == after
            assert receiver.deliveries == []  # its attempt still under way
        finally:
            receiver.release.set()


async def test_an_endpoint_deleted_during_its_delivery_is_not_brought_back(
    http: httpx.AsyncClient, receiver: Receiver, redis: AsyncClient
) -> None:
    await live_and_funded(http)
    created = await register(http, receiver)
    receiver.hold = True
    try:
        await gifts(http, 1)
        await receiver.wait_for_arrivals(1)
        deleted = await http.delete(f"/v1/webhooks/{created['webhook_id']}", headers=STREAMER)
        assert deleted.status_code == 200, deleted.text
    finally:
        receiver.release.set()
    await receiver.wait_for_attempts(1)
    await gifts(http, 2, "after")

    async def nothing_left() -> bool:
        found = [k async for k in redis.scan_iter(match="*webhook*")]
        return found == [] or found == [keys.WEBHOOK_STREAMS]

    await wait_until(nothing_left, 10, "every trace of the endpoint gone")
    assert await listed(http) == []
    assert receiver.arrived == 1


async def test_a_2xx_after_the_attempts_timeout_is_a_failure_and_the_message_comes_again(
    start: Any, receiver: Receiver
) -> None:
    server = start(webhooks={**FAST_WEBHOOKS, "timeout_s": 0.5, "lease_ms": 3000})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await live_and_funded(http)
        await register(http, receiver)
        receiver.hold = True
        sent = await gifts(http, 1)

        async def timed_out() -> bool:
            attempts = (await listed(http))[0]["attempts"]
            return bool(attempts) and attempts[0]["error"] == "no answer within 0.5s"

        try:
            await wait_until(timed_out, 10, "the attempt to time out")
        finally:
            receiver.release.set()  # its late 200 now goes to a closed connection
        receiver.hold = False
        await receiver.wait_for_arrivals(2)
        mid = f"msg_s1_{sent[0]}"
        assert receiver.arrivals[:2] == [mid, mid]  # the same message id again

        async def delivered() -> bool:
            [webhook] = await listed(http)
            return bool(webhook["delivered_through"] == sent[0] and webhook["failures"] == 0)

        await wait_until(delivered, 10, "the redelivery recorded")
        assert [e["event_id"] for e in receiver.events()] == sent


async def test_two_workers_deliver_each_message_once_in_order(
    start: Any, receiver: Receiver
) -> None:
    """Both workers' deliverers race for the stream's lease every poll: with no
    failure, no message is sent twice and none out of order."""
    first, second = start(), start()
    async with (
        httpx.AsyncClient(base_url=first.url, timeout=10) as one,
        httpx.AsyncClient(base_url=second.url, timeout=10) as other,
    ):
        await live_and_funded(one)
        await register(one, receiver)
        sent = []
        for i in range(20):
            response = await gift(one if i % 2 else other, ALICE, f"w{i}")
            assert response.status_code == 200, response.text
            sent.append(response.json()["event_id"])
        events = await receiver.wait_for(20)
        assert [e["event_id"] for e in events] == sent
        assert receiver.arrivals == [f"msg_s1_{i}" for i in sent]


async def test_the_log_keeps_only_what_an_enabled_endpoint_still_waits_for(
    start: Any, receiver: Receiver, redis: AsyncClient
) -> None:
    server = start(webhooks={**FAST_WEBHOOKS, "max_age_s": 2})
    async with receiving() as broken, httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await live_and_funded(http)
        await register(http, receiver)
        await register(http, broken)
        broken.always_fail = True
        sent = await gifts(http, 5)
        await receiver.wait_for(5)

        async def log_length() -> int:
            return int(await redis.xlen(keys.webhook_log("s1")))

        # The broken one still waits for all five; once it is disabled (max_age_s)
        # the log keeps what the healthy one waits for: nothing.
        assert await log_length() == len(sent)

        async def emptied() -> bool:
            return await log_length() == 0

        await wait_until(emptied, 15, "the log trimmed")
        [healthy, disabled] = sorted(await listed(http), key=lambda w: w["status"])
        assert (healthy["status"], disabled["status"]) == ("active", "disabled")
        assert healthy["delivered_through"] == sent[-1]
        # Deleted too, the last enabled one takes the log with it.
        deleted = await http.delete(f"/v1/webhooks/{healthy['webhook_id']}", headers=STREAMER)
        assert deleted.status_code == 200, deleted.text
        assert not await redis.exists(keys.webhook_log("s1"))
        assert await redis.hget(keys.stream("s1"), keys.WEBHOOK_LOG_FIELD) is None


async def hanging_endpoint(store: Store, receiver: Receiver, lease_ms: int) -> Store:
    """A store polling every 20 ms with a 10 s attempt timeout and `lease_ms` leases,
    stream s1 live, alice funded, and `receiver` registered for s1's gifts and holding
    every request it gets (`receiver.hold`) until released."""
    webhooks = dataclasses.replace(
        store.settings.webhooks, poll_ms=20, timeout_s=10.0, lease_ms=lease_ms
    )
    store = Store(store.redis, dataclasses.replace(store.settings, webhooks=webhooks))
    await live_stream(store, "s1", "streamer1")
    await fund(store, "alice")
    who = Identity("streamer1", "Streamer One", Role.STREAMER)
    await endpoints.register(store, who, "s1", parse_target(receiver.url), ("gift",), "k")
    receiver.hold = True
    return store


async def test_a_deliverer_stopped_while_its_round_waits_out_an_attempt_leaves_nothing_running(
    store: Store, receiver: Receiver
) -> None:
    """A round past its deadline no longer starts anything but waits for the attempt
    under way (here a receiver that hangs) before it gives up the lease. A shutdown
    then must end that attempt too: one left running would deliver, and record, with
    no lease (another worker may hold it by then) and after its server stopped."""
    store = await hanging_endpoint(store, receiver, lease_ms=10_500)
    deliverer = Deliverer(store)
    deliverer.start()
    try:
        await send_gift(store, viewer("alice"), "s1", "rose", 1, "g1")
        await receiver.wait_for_arrivals(1)

        async def past_the_deadline() -> bool:
            # The round's deadline is lease_ms - timeout_s - 0.1 s after the lease
            # was taken: with 5 s of the lease left it has long passed (by 4.6 s, its
            # 20 ms polls since), and the attempt has about 5 s to go.
            return 0 < int(await store.redis.pttl(keys.webhook_lease("s1"))) < 5000

        await wait_until(past_the_deadline, 15, "the round's deadline passed")
    finally:
        await deliverer.stop()
        receiver.release.set()
    running = [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "").startswith("Deliverer.")
    ]
    assert running == []


class SlowToAttempt(Deliverer):
    """A deliverer whose last read before each attempt to `slow_url` (the secret)
    answers late, as a busy Redis does: five polls later."""

    slow_url = ""

    async def _secret(self, stream_id: str, webhook_id: str, record: dict[str, str]) -> str | None:
        if record.get("url") == self.slow_url:
            await asyncio.sleep(5 * self.config.poll_ms / 1000)
        return await super()._secret(stream_id, webhook_id, record)


async def test_an_endpoint_slow_to_start_an_attempt_that_hangs_holds_back_no_other(
    store: Store, receiver: Receiver
) -> None:
    """The round must not end while an endpoint is still on its way to an attempt:
    ended, it waits for that attempt, and when it hangs, an endpoint registered
    meanwhile would wait for its whole `timeout_s` instead of being started at the
    next poll."""
    store = await hanging_endpoint(store, receiver, lease_ms=60_000)
    who = Identity("streamer1", "Streamer One", Role.STREAMER)
    deliverer = SlowToAttempt(store)
    deliverer.slow_url = receiver.url
    deliverer.start()
    try:
        async with receiving() as late:
            await send_gift(store, viewer("alice"), "s1", "rose", 1, "g1")
            await receiver.wait_for_arrivals(1)  # its attempt hangs
            target = parse_target(late.url)
            await endpoints.register(store, who, "s1", target, ("gift",), "k2")
            sent = await send_gift(store, viewer("alice"), "s1", "rose", 1, "g2")
            events = await late.wait_for(1, timeout=5)  # not after the 10 s attempt
            assert [e["event_id"] for e in events] == [sent.event_id]
            assert receiver.deliveries == []  # its attempt still under way
    finally:
        await deliverer.stop()
        receiver.release.set()


async def test_two_workers_with_a_hanging_endpoint_deliver_a_late_one_in_order_one_at_a_time(
    start: Any, receiver: Receiver
) -> None:
    """A receiver that never answers holds each round until its attempt times out; the
    rounds, and the lease, pass between two workers meanwhile, and an endpoint
    registered after the first of them is started again within each round. Its
    messages come in order, one attempt at a time (a round that outlived its lease
    would overlap the next holder's), and none is lost."""
    webhooks = {**FAST_WEBHOOKS, "timeout_s": 1.0, "lease_ms": 1300}
    first, second = start(webhooks=webhooks), start(webhooks=webhooks)
    async with (
        receiving() as late,
        httpx.AsyncClient(base_url=first.url, timeout=10) as one,
        httpx.AsyncClient(base_url=second.url, timeout=10) as other,
    ):
        await live_and_funded(one)
        await register(one, receiver)
        receiver.hold = True  # every attempt times out, for the whole test
        try:
            await gifts(one, 1, "a")
            await receiver.wait_for_arrivals(1)
            await register(other, late)
            sent = []
            for round_ in range(4):
                # A new round (the hanging attempt timed out; either worker may hold it).
                await receiver.wait_for_arrivals(round_ + 2)
                for i in range(3):
                    sent += await gifts(one if i % 2 else other, 1, f"b{round_}-{i}")
            events = await late.wait_for(len(sent), timeout=30)
            assert [e["event_id"] for e in events] == sent
            arrived = [int(mid.rsplit("_", 1)[1]) for mid in late.arrivals]
            assert arrived == sorted(arrived)  # a message again only right after itself
            assert late.most_in_flight == 1
        finally:
            receiver.release.set()


async def test_an_endpoint_started_again_past_the_rounds_deadline_sends_nothing_more(
    start: Any, receiver: Receiver, redis: AsyncClient
) -> None:
    """While a hanging receiver holds a round, the round's other endpoints are started
    again each poll, but past the round's deadline (lease_ms - timeout_s - 0.1 s after
    its lease) none may start an attempt: one could outlast the lease, and the next
    holder (the other worker) would send the same message while it is still under way."""
    webhooks = {**FAST_WEBHOOKS, "timeout_s": 3.0, "lease_ms": 3300}
    first, second = start(webhooks=webhooks), start(webhooks=webhooks)
    async with (
        receiving() as late,
        httpx.AsyncClient(base_url=first.url, timeout=10) as one,
        httpx.AsyncClient(base_url=second.url, timeout=10) as other,
    ):
        await live_and_funded(one)
        await register(one, receiver)
        receiver.hold = late.hold = True  # every attempt to either one times out
        try:
            await gifts(one, 1, "a")
            await receiver.wait_for_arrivals(1)
            await register(other, late)

            async def past_the_deadline() -> bool:
                # The deadline is 0.2 s after the lease was taken: with 2.5 s left it
                # has passed, and the hanging attempt has more than 2 s to go.
                return 0 < int(await redis.pttl(keys.webhook_lease("s1"))) < 2500

            await wait_until(past_the_deadline, 15, "the round's deadline passed")
            await gifts(other, 1, "b")
            await late.wait_for_arrivals(2, timeout=30)  # and its attempt timed out once
            assert late.most_in_flight == 1
        finally:
            receiver.release.set()
            late.release.set()


async def test_an_endpoint_that_fails_does_not_let_another_be_sent_twice_at_once(
    start: Any, receiver: Receiver, redis: AsyncClient
) -> None:
    """One endpoint's delivery raises (its record is broken) while another's attempt
    hangs: the round must wait for that attempt before it gives up the lease, or the
    other worker takes the lease and sends the same message while it is under way."""
    webhooks = {**FAST_WEBHOOKS, "timeout_s": 2.0, "lease_ms": 2300}
    first, second = start(webhooks=webhooks), start(webhooks=webhooks)
    async with (
        receiving() as broken,
        httpx.AsyncClient(base_url=first.url, timeout=10) as one,
        httpx.AsyncClient(base_url=second.url, timeout=10) as other,
    ):
        await live_and_funded(one)
        await register(one, receiver)
        created = await register(other, broken)
        await redis.hset(keys.webhook("s1", created["webhook_id"]), "cursor", "not a number")
        receiver.hold = True
        try:
            await gifts(one, 1, "a")
            await receiver.wait_for_arrivals(2, timeout=30)  # the next round's attempt
            assert receiver.most_in_flight == 1
            assert broken.arrived == 0
        finally:
            receiver.release.set()
