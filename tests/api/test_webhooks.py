"""Outgoing webhooks over real sockets: a server delivers to a real receiver on a
loopback port (allowed by `[webhooks] allow_private`), signed with the endpoint's
secret, every event once per message id and in order, through the receiver's
failures; and a streamer's requests about their endpoints, good and bad."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from gifting_server.auth import Role
from gifting_server.ledger import keys
from tests.api import assert_error
from tests.api import snapshot as full_snapshot
from tests.api.test_http_flow import ALICE, STREAMER, buy, gift, go_live
from tests.api.webhook_server import FAST_WEBHOOKS
from tests.conftest import ServerThread
from tests.factories import auth
from tests.faults import wait_until
from tests.topology import AsyncClient
from tests.webhook_receiver import Receiver

OTHER_STREAMER = auth("streamer2", Role.STREAMER)


@pytest.fixture
async def http(start: Any) -> AsyncIterator[httpx.AsyncClient]:
    server: ServerThread = start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        yield client


async def snapshot(redis: AsyncClient) -> dict[str, Any]:
    """Every key but the deliverer's lease, which comes and goes with each pass."""
    state = await full_snapshot(redis)  # type: ignore[arg-type]
    return {k: v for k, v in state.items() if k != keys.webhook_lease("s1")}


async def register(
    http: httpx.AsyncClient, receiver: Receiver, kinds: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    body = {"url": receiver.url, "kinds": kinds or ["gift"], "stream_id": "s1", **extra}
    response = await http.post("/v1/webhooks", json=body, headers=STREAMER)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    receiver.secrets.append(created["secret"])
    return created


async def gifts(http: httpx.AsyncClient, count: int, prefix: str = "g") -> list[int]:
    event_ids = []
    for i in range(count):
        response = await gift(http, ALICE, f"{prefix}{i}")
        assert response.status_code == 200, response.text
        event_ids.append(response.json()["event_id"])
    return event_ids


async def listed(http: httpx.AsyncClient, who: dict[str, str] = STREAMER) -> list[dict[str, Any]]:
    response = await http.get("/v1/webhooks", headers=who)
    assert response.status_code == 200, response.text
    webhooks: list[dict[str, Any]] = response.json()["webhooks"]
    return webhooks


async def history(redis: AsyncClient, stream_id: str = "s1") -> dict[int, dict[str, Any]]:
    entries = await redis.xrange(keys.stream_history(stream_id))
    return {int(entry_id.split("-")[0]): json.loads(f["e"]) for entry_id, f in entries}


def metric(name: str, **labels: str) -> float:
    """A metric of the servers of this process (the test's)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def live_and_funded(http: httpx.AsyncClient) -> None:
    await go_live(http, "s1")
    await buy(http, "alice", "coins_1000")


async def test_every_event_arrives_signed_once_in_order_as_on_the_websocket(
    http: httpx.AsyncClient, receiver: Receiver, redis: AsyncClient
) -> None:
    await live_and_funded(http)
    before = await gifts(http, 2, "before")  # sent before the endpoint: not delivered
    created = await register(http, receiver, ["gift", "goal"])
    assert created["webhook_id"].startswith("wh_") and created["secret"].startswith("whsec_")
    sent = await gifts(http, 15)
    goal = await http.put("/v1/streams/s1/goal", json={"target": 500}, headers=STREAMER)
    assert goal.status_code == 200, goal.text
    events = await receiver.wait_for(16)
    in_history = await history(redis)
    assert [e["event_id"] for e in events] == [*sent, max(sent) + 1]
    assert all(e["event_id"] not in before for e in events)
    assert events == [in_history[e["event_id"]] for e in events]  # exactly the stream's events
    assert events[-1]["kind"] == "goal"
    for d in receiver.delivered():
        assert d.signed_with == created["secret"]
        assert d.body["message_id"] == d.message_id
        assert d.body["stream_id"] == "s1"
    ids = [d.message_id for d in receiver.delivered()]
    assert len(ids) == len(set(ids)) == 16  # no failure: nothing sent twice


async def test_only_the_kinds_asked_for_are_sent(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await live_and_funded(http)
    await register(http, receiver, ["goal"])
    await gifts(http, 3)
    goal = await http.put("/v1/streams/s1/goal", json={"target": 50}, headers=STREAMER)
    assert goal.status_code == 200, goal.text
    events = await receiver.wait_for(1)
    assert [e["kind"] for e in events] == ["goal"]

    # The gifts before it were passed over: the endpoint's cursor goes past them
    # (recorded once the receiver's answer is in).
    async def past_the_goal() -> bool:
        return bool((await listed(http))[0]["delivered_through"] == events[0]["event_id"])

    await wait_until(past_the_goal, 10, "the cursor past the goal")


async def test_a_receiver_failing_for_a_while_gets_everything_in_order(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await live_and_funded(http)
    await register(http, receiver)
    receiver.fail_next = 4
    failed = metric("gifting_webhook_deliveries_total", outcome="failed")
    delivered = metric("gifting_webhook_deliveries_total", outcome="ok")
    sent = await gifts(http, 10)
    events = await receiver.wait_for(10)
    assert [e["event_id"] for e in events] == sent
    # The four failures were all the first message, retried with backoff; then in order.
    first = receiver.deliveries[:5]
    assert [d.answered for d in first] == [500, 500, 500, 500, 200]
    assert len({d.message_id for d in first}) == 1
    webhook = (await listed(http))[0]
    assert webhook["status"] == "active" and webhook["failures"] == 0
    errors = [a for a in webhook["attempts"] if not a["ok"]]
    assert len(errors) == 4 and all(a["status"] == 500 for a in errors)
    assert all(a["error"] == "answered 500" and a["at"] > 0 for a in errors)
    assert metric("gifting_webhook_deliveries_total", outcome="failed") - failed == 4
    # Counted when the worker has the answer, a moment after the receiver sent it.
    await wait_until(
        lambda: metric("gifting_webhook_deliveries_total", outcome="ok") - delivered == 10,
        10,
        "ten deliveries counted",
    )


async def test_an_endpoint_behind_by_max_age_is_disabled_with_the_reason(
    start: Any, receiver: Receiver, redis: AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gifting_server.audit")
    server = start(webhooks={**FAST_WEBHOOKS, "max_age_s": 1})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await live_and_funded(http)
        created = await register(http, receiver)
        receiver.always_fail = True
        disabled_before = metric("gifting_webhooks_disabled_total")
        await gifts(http, 1)
        await wait_until(
            lambda: metric("gifting_webhook_backlog") >= 1, 10, "the message in the backlog"
        )

        async def disabled() -> dict[str, Any] | None:
            webhook = (await listed(http))[0]
            return webhook if webhook["status"] == "disabled" else None

        webhook = await wait_until(disabled, 10, "the endpoint disabled")
        assert webhook["webhook_id"] == created["webhook_id"]
        assert "max_age_s = 1" in webhook["disabled_reason"]
        assert metric("gifting_webhooks_disabled_total") - disabled_before == 1
        [line] = [r for r in caplog.records if r.getMessage() == "webhook_disabled"]
        fields = line.__dict__["fields"]
        assert fields["webhook_id"] == created["webhook_id"] and fields["stream_id"] == "s1"
        assert fields["reason"] == webhook["disabled_reason"]
        assert webhook["attempts"] and not webhook["attempts"][0]["ok"]
        # Its stream's events no longer go to a delivery log.
        assert await redis.hget(keys.stream("s1"), keys.WEBHOOK_LOG_FIELD) is None
        assert not await redis.exists(keys.webhook_log("s1"))
        tried = len(receiver.deliveries)
        await gifts(http, 2, "after")
        assert not await redis.exists(keys.webhook_log("s1"))
        assert len(receiver.deliveries) == tried


async def test_a_rotated_secret_signs_the_next_delivery(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await live_and_funded(http)
    created = await register(http, receiver)
    await gifts(http, 1, "old")
    await receiver.wait_for(1)
    rotated = await http.post(
        f"/v1/webhooks/{created['webhook_id']}/rotate-secret", headers=STREAMER
    )
    assert rotated.status_code == 200, rotated.text
    secret = rotated.json()["secret"]
    assert secret != created["secret"]
    receiver.secrets.append(secret)
    await gifts(http, 1, "new")
    await receiver.wait_for(2)
    assert [d.signed_with for d in receiver.delivered()] == [created["secret"], secret]


async def test_a_test_delivery_is_signed_and_listed(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await live_and_funded(http)
    created = await register(http, receiver)
    response = await http.post(f"/v1/webhooks/{created['webhook_id']}/test", headers=STREAMER)
    assert response.status_code == 200, response.text
    attempt = response.json()["attempt"]
    assert attempt["ok"] is True and attempt["status"] == 200
    [delivery] = receiver.deliveries
    assert delivery.signed_with == created["secret"]
    assert delivery.body["event"]["kind"] == "test" and delivery.message_id == attempt["message_id"]
    assert (await listed(http))[0]["attempts"][0]["message_id"] == attempt["message_id"]


async def test_test_deliveries_are_one_a_second_per_endpoint(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    """A test makes the server send a request on demand: a second one at once is
    refused 429 with when to try again, sends nothing, and another endpoint's goes."""
    await live_and_funded(http)
    first = await register(http, receiver)
    other = await register(http, receiver, idempotency_key="other")
    path = f"/v1/webhooks/{first['webhook_id']}/test"
    assert (await http.post(path, headers=STREAMER)).status_code == 200
    again = await http.post(path, headers=STREAMER)
    assert_error(again, 429, "rate_limited")
    assert 0 < again.json()["error"]["retry_after_ms"] <= 1000
    assert again.headers["Retry-After"] == "1"
    assert len(receiver.deliveries) == 1  # the refused one sent nothing
    elsewhere = await http.post(f"/v1/webhooks/{other['webhook_id']}/test", headers=STREAMER)
    assert elsewhere.status_code == 200, elsewhere.text
    assert len(receiver.deliveries) == 2


async def test_a_repeated_registration_key_answers_the_same_endpoint(
    http: httpx.AsyncClient, receiver: Receiver, redis: AsyncClient
) -> None:
    await live_and_funded(http)
    first = await register(http, receiver, idempotency_key="reg-1")
    again = await register(http, receiver, idempotency_key="reg-1")
    assert again == first
    assert len(await listed(http)) == 1
    state = await snapshot(redis)
    other = {"url": receiver.url + "?x=1", "kinds": ["gift"], "stream_id": "s1"}
    conflict = await http.post(
        "/v1/webhooks", json={**other, "idempotency_key": "reg-1"}, headers=STREAMER
    )
    assert_error(conflict, 409, "idempotency_conflict")
    assert await snapshot(redis) == state


async def test_a_deleted_endpoint_gets_nothing_more_and_the_log_goes(
    http: httpx.AsyncClient, receiver: Receiver, redis: AsyncClient
) -> None:
    await live_and_funded(http)
    created = await register(http, receiver)
    await gifts(http, 1)
    await receiver.wait_for(1)
    deleted = await http.delete(f"/v1/webhooks/{created['webhook_id']}", headers=STREAMER)
    assert deleted.status_code == 200, deleted.text
    assert await listed(http) == []
    assert await redis.hget(keys.stream("s1"), keys.WEBHOOK_LOG_FIELD) is None
    await gifts(http, 2, "after")
    assert not await redis.exists(keys.webhook_log("s1"))
    again = await http.delete(f"/v1/webhooks/{created['webhook_id']}", headers=STREAMER)
    assert_error(again, 404, "unknown_webhook")


async def test_private_targets_are_refused_unless_allowed(
    start: Any, receiver: Receiver, redis: AsyncClient
) -> None:
    server = start(webhooks={**FAST_WEBHOOKS, "allow_private": False})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await go_live(http, "s1")
        state = await snapshot(redis)
        for url in (
            receiver.url,
            "http://localhost:9/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.10/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "http://0.0.0.0/hook",
        ):
            body = {"url": url, "kinds": ["gift"], "stream_id": "s1"}
            response = await http.post("/v1/webhooks", json=body, headers=STREAMER)
            assert_error(response, 422, "invalid_request")
            assert "refused" in response.json()["error"]["message"], url
        assert await snapshot(redis) == state


async def test_bad_requests_get_clear_errors_and_change_nothing(
    http: httpx.AsyncClient, receiver: Receiver, redis: AsyncClient
) -> None:
    await go_live(http, "s1")
    await go_live(http, "theirs", OTHER_STREAMER)
    created = await register(http, receiver)
    state = await snapshot(redis)
    good = {"url": receiver.url, "kinds": ["gift"], "stream_id": "s1"}
    bad_bodies: list[tuple[dict[str, Any], int, str]] = [
        ({**good, "url": "ftp://example.com/x"}, 422, "invalid_request"),
        ({**good, "url": "not a url"}, 422, "invalid_request"),
        ({**good, "url": "http:///nohost"}, 422, "invalid_request"),
        ({**good, "url": "http://user:pw@127.0.0.1/"}, 422, "invalid_request"),
        ({**good, "url": 5}, 422, "invalid_request"),
        ({**good, "kinds": ["gift", "nope"]}, 422, "invalid_request"),
        ({**good, "kinds": []}, 422, "invalid_request"),
        ({**good, "kinds": "gift"}, 422, "invalid_request"),
        ({**good, "stream_id": "bad id"}, 422, "invalid_request"),
        ({**good, "extra": 1}, 422, "invalid_request"),
        ({**good, "idempotency_key": "bad key!"}, 422, "invalid_request"),
        ({**good, "stream_id": "theirs"}, 403, "forbidden"),
        ({**good, "stream_id": "nowhere"}, 404, "unknown_stream"),
    ]
    for body, status, code in bad_bodies:
        response = await http.post("/v1/webhooks", json=body, headers=STREAMER)
        assert_error(response, status, code)
    viewer = await http.post("/v1/webhooks", json=good, headers=ALICE)
    assert_error(viewer, 403, "forbidden")
    anonymous = await http.get("/v1/webhooks")
    assert_error(anonymous, 401, "unauthorized")
    webhook_id = created["webhook_id"]
    for method, path in (
        ("DELETE", f"/v1/webhooks/{webhook_id}"),
        ("POST", f"/v1/webhooks/{webhook_id}/rotate-secret"),
        ("POST", f"/v1/webhooks/{webhook_id}/test"),
    ):
        response = await http.request(method, path, headers=OTHER_STREAMER)
        assert_error(response, 404, "unknown_webhook")
        unknown = await http.request(method, path.replace(webhook_id, "wh_none"), headers=STREAMER)
        assert_error(unknown, 404, "unknown_webhook")
    assert await listed(http, OTHER_STREAMER) == []
    assert await snapshot(redis) == state
    assert receiver.deliveries == []


async def test_a_gift_to_a_stream_without_endpoints_feeds_no_log(
    http: httpx.AsyncClient, redis: AsyncClient
) -> None:
    await live_and_funded(http)
    await gifts(http, 3)
    assert await redis.hget(keys.stream("s1"), keys.WEBHOOK_LOG_FIELD) is None
    assert not await redis.exists(keys.webhook_log("s1"))


async def test_the_address_is_checked_again_at_each_delivery(
    start: Any, receiver: Receiver
) -> None:
    """An endpoint registered where private addresses were allowed, delivered by a
    worker where they are not: each attempt is refused before it connects."""
    allowing: ServerThread = start()
    async with httpx.AsyncClient(base_url=allowing.url, timeout=10) as http:
        await live_and_funded(http)
        await register(http, receiver)
    allowing.__exit__(None, None, None)  # its deliverer stops with it
    refusing = start(webhooks={**FAST_WEBHOOKS, "allow_private": False})
    async with httpx.AsyncClient(base_url=refusing.url, timeout=10) as http:
        await gifts(http, 1)

        async def refused_attempt() -> dict[str, Any] | None:
            attempts = (await listed(http))[0]["attempts"]
            return attempts[0] if attempts else None

        attempt = await wait_until(refused_attempt, 10, "a delivery attempt")
        assert attempt["ok"] is False and attempt["status"] is None
        assert attempt["error"].startswith("refused: 127.0.0.1 resolves to 127.0.0.1, a loopback")
    assert receiver.arrived == 0


async def test_an_endpoint_gets_only_its_own_streams_events(
    http: httpx.AsyncClient, receiver: Receiver, redis: AsyncClient
) -> None:
    await live_and_funded(http)
    await go_live(http, "s2")
    await register(http, receiver)
    other = await gift(http, ALICE, "to-s2", stream_id="s2")
    assert other.status_code == 200, other.text
    sent = await gifts(http, 2)
    events = await receiver.wait_for(2)
    assert [e["event_id"] for e in events] == sent
    assert {d.body["stream_id"] for d in receiver.deliveries} == {"s1"}
    assert not await redis.exists(keys.webhook_log("s2"))


async def test_an_endpoint_for_all_streams_follows_those_live_and_those_after(
    http: httpx.AsyncClient, receiver: Receiver, redis: AsyncClient
) -> None:
    await live_and_funded(http)  # s1, live before the registration
    body = {"url": receiver.url, "kinds": ["gift"]}
    response = await http.post("/v1/webhooks", json=body, headers=STREAMER)
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["stream_id"] is None
    receiver.secrets.append(created["secret"])
    await go_live(http, "s2")  # after it
    on_s1 = [(await gift(http, ALICE, f"a{i}")).json()["event_id"] for i in range(2)]
    on_s2 = [
        (await gift(http, ALICE, f"b{i}", stream_id="s2")).json()["event_id"] for i in range(2)
    ]
    await receiver.wait_for(4)
    by_stream: dict[str, list[int]] = {}
    for d in receiver.delivered():
        by_stream.setdefault(d.body["stream_id"], []).append(d.body["event"]["event_id"])
        assert d.signed_with == created["secret"]
        assert d.message_id == f"msg_{d.body['stream_id']}_{d.body['event']['event_id']}"
    assert by_stream == {"s1": on_s1, "s2": on_s2}

    [webhook] = await listed(http)
    assert webhook["webhook_id"] == created["webhook_id"] and webhook["stream_id"] is None
    assert [s["stream_id"] for s in webhook["streams"]] == ["s1", "s2"]
    assert all(s["status"] == "active" for s in webhook["streams"])

    rotated = await http.post(
        f"/v1/webhooks/{created['webhook_id']}/rotate-secret", headers=STREAMER
    )
    assert rotated.status_code == 200, rotated.text
    receiver.secrets.append(rotated.json()["secret"])
    await gift(http, ALICE, "b-new", stream_id="s2")
    await receiver.wait_for(5)
    assert receiver.delivered()[-1].signed_with == rotated.json()["secret"]

    test = await http.post(f"/v1/webhooks/{created['webhook_id']}/test", headers=STREAMER)
    assert test.status_code == 200 and test.json()["attempt"]["ok"] is True, test.text
    assert receiver.deliveries[-1].body["stream_id"] is None

    deleted = await http.delete(f"/v1/webhooks/{created['webhook_id']}", headers=STREAMER)
    assert deleted.status_code == 200, deleted.text
    assert await listed(http) == []
    for stream_id in ("s1", "s2"):
        assert await redis.hget(keys.stream(stream_id), keys.WEBHOOK_LOG_FIELD) is None
    await go_live(http, "s3")
    await gift(http, ALICE, "c0", stream_id="s3")
    assert not await redis.exists(keys.webhook_log("s3"))


async def test_a_repeated_key_answers_the_same_endpoint_for_all_streams(
    http: httpx.AsyncClient, receiver: Receiver
) -> None:
    await live_and_funded(http)
    body = {"url": receiver.url, "kinds": ["gift"], "idempotency_key": "all-1"}
    first, again = [await http.post("/v1/webhooks", json=body, headers=STREAMER) for _ in "12"]
    assert first.status_code == again.status_code == 201, again.text
    assert again.json() == first.json()
    [webhook] = await listed(http)
    assert [s["stream_id"] for s in webhook["streams"]] == ["s1"]
    one_stream = await http.post("/v1/webhooks", json={**body, "stream_id": "s1"}, headers=STREAMER)
    assert_error(one_stream, 409, "idempotency_conflict")
