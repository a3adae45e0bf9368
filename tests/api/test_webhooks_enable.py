"""A disabled endpoint enabled again (`POST /v1/webhooks/{id}/enable`): the same id
and secret, delivered from the stream's next event on, never the ones before; for
one stream and for all a streamer's streams, repeated, and raced against a
registration and a deletion.

Each test disables its endpoints on a server with `max_age_s = 1` and a receiver
that fails, stops that server, then enables them on one with the default max_age:
the events from before the enable are not older than its max_age, so that they are
not delivered is the enable's doing, not another disable's."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store
from gifting_server.webhooks import following, records
from tests.api import assert_error
from tests.api.test_http_flow import ALICE, STREAMER, gift, go_live
from tests.api.test_webhooks import (
    FAST_WEBHOOKS,
    OTHER_STREAMER,
    gifts,
    listed,
    live_and_funded,
    register,
    snapshot,
)
from tests.conftest import ServerThread
from tests.faults import wait_until
from tests.topology import AsyncClient
from tests.webhook_receiver import Receiver

SHORT_MAX_AGE = {**FAST_WEBHOOKS, "max_age_s": 1}


def statuses(webhook: dict[str, Any]) -> list[str]:
    """The status of each stream an endpoint is delivered to."""
    return [s["status"] for s in webhook.get("streams", [webhook])]


async def wait_disabled(http: httpx.AsyncClient, webhook_ids: set[str]) -> None:
    async def all_disabled() -> bool:
        found = {w["webhook_id"]: statuses(w) for w in await listed(http)}
        return all(found.get(w) and set(found[w]) == {"disabled"} for w in webhook_ids)

    await wait_until(all_disabled, 15, f"{sorted(webhook_ids)} disabled")


async def enable(http: httpx.AsyncClient, webhook_id: str) -> httpx.Response:
    return await http.post(f"/v1/webhooks/{webhook_id}/enable", headers=STREAMER)


def assert_active_again(webhook: dict[str, Any]) -> None:
    for state in webhook.get("streams", [webhook]):
        assert state["status"] == "active" and state["failures"] == 0, state
        assert "disabled_reason" not in state and "disabled_at" not in state


async def test_an_enabled_endpoint_gets_the_next_gifts_signed_with_its_secret(
    start: Any, receiver: Receiver, redis: AsyncClient
) -> None:
    short: ServerThread = start(webhooks=SHORT_MAX_AGE)
    async with httpx.AsyncClient(base_url=short.url, timeout=10) as http:
        await live_and_funded(http)
        created = await register(http, receiver)
        webhook_id = created["webhook_id"]
        receiver.always_fail = True
        old = await gifts(http, 1, "old")
        await wait_disabled(http, {webhook_id})
        while_disabled = await gifts(http, 2, "while")
    short.__exit__(None, None, None)
    receiver.always_fail = False
    tried = len(receiver.deliveries)
    assert not receiver.delivered()

    server: ServerThread = start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        assert_error(
            await http.post(f"/v1/webhooks/{webhook_id}/enable", headers=OTHER_STREAMER),
            404,
            "unknown_webhook",
        )
        assert_error(await enable(http, "wh_none"), 404, "unknown_webhook")
        assert_error(
            await http.post(f"/v1/webhooks/{webhook_id}/enable", headers=ALICE), 403, "forbidden"
        )
        assert (await listed(http))[0]["status"] == "disabled"  # the refusals changed nothing

        response = await enable(http, webhook_id)
        assert response.status_code == 200, response.text
        enabled = response.json()
        assert enabled["webhook_id"] == webhook_id and enabled["stream_id"] == "s1"
        assert_active_again(enabled)
        assert enabled["delivered_through"] == max(while_disabled)  # the stream's last event
        assert [enabled] == await listed(http)
        assert await redis.hget(keys.stream("s1"), keys.WEBHOOK_LOG_FIELD) is not None
        assert await redis.sismember(keys.WEBHOOK_STREAMS, "s1")

        state = await snapshot(redis)
        again = await enable(http, webhook_id)  # enabling an active endpoint: harmless
        assert again.status_code == 200, again.text
        assert again.json() == enabled
        assert await snapshot(redis) == state

        new = await gifts(http, 2, "new")
        events = await receiver.wait_for(2)
        assert [e["event_id"] for e in events] == new
        later = receiver.deliveries[tried:]
        assert {d.message_id for d in later} == {f"msg_s1_{e}" for e in new}
        assert not {f"msg_s1_{e}" for e in old + while_disabled} & {d.message_id for d in later}
        assert all(d.signed_with == created["secret"] for d in later)
        [webhook] = await listed(http)
        assert_active_again(webhook)


async def test_an_endpoint_for_all_streams_is_enabled_on_each(
    start: Any, receiver: Receiver, redis: AsyncClient
) -> None:
    short: ServerThread = start(webhooks=SHORT_MAX_AGE)
    async with httpx.AsyncClient(base_url=short.url, timeout=10) as http:
        await live_and_funded(http)
        await go_live(http, "s2")
        body = {"url": receiver.url, "kinds": ["gift"]}
        response = await http.post("/v1/webhooks", json=body, headers=STREAMER)
        assert response.status_code == 201, response.text
        created = response.json()
        receiver.secrets.append(created["secret"])
        receiver.always_fail = True
        await gift(http, ALICE, "old-a", stream_id="s1")
        await gift(http, ALICE, "old-b", stream_id="s2")
        await wait_disabled(http, {created["webhook_id"]})
    short.__exit__(None, None, None)
    receiver.always_fail = False
    tried = len(receiver.deliveries)

    server: ServerThread = start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        response = await enable(http, created["webhook_id"])
        assert response.status_code == 200, response.text
        enabled = response.json()
        assert enabled["stream_id"] is None
        assert [s["stream_id"] for s in enabled["streams"]] == ["s1", "s2"]
        assert_active_again(enabled)
        for stream_id in ("s1", "s2"):
            assert await redis.hget(keys.stream(stream_id), keys.WEBHOOK_LOG_FIELD) is not None
        again = await enable(http, created["webhook_id"])
        assert again.status_code == 200 and again.json() == enabled, again.text

        on_s1 = (await gift(http, ALICE, "new-a", stream_id="s1")).json()["event_id"]
        on_s2 = (await gift(http, ALICE, "new-b", stream_id="s2")).json()["event_id"]
        await receiver.wait_for(2)
        later = receiver.deliveries[tried:]
        assert sorted(d.message_id for d in later) == [f"msg_s1_{on_s1}", f"msg_s2_{on_s2}"]
        assert all(d.signed_with == created["secret"] for d in later)


async def test_enabling_raced_with_a_registration_and_deletions(
    start: Any, receiver: Receiver, redis: AsyncClient
) -> None:
    """On s1, one endpoint is enabled while another of the stream is deleted and a third
    registered; on s2, an endpoint is enabled and deleted at once. Whatever the order,
    s1 ends with the enabled and the new one delivered to, and s2 with nothing left:
    no endpoint, no log fed."""
    short: ServerThread = start(webhooks=SHORT_MAX_AGE)
    async with httpx.AsyncClient(base_url=short.url, timeout=10) as http:
        await live_and_funded(http)
        await go_live(http, "s2")
        kept = await register(http, receiver)
        dropped = await register(http, receiver, idempotency_key="dropped")
        other = await register(http, receiver, idempotency_key="other", stream_id="s2")
        receiver.always_fail = True
        await gifts(http, 1, "old")
        await gift(http, ALICE, "old-s2", stream_id="s2")
        await wait_disabled(http, {kept["webhook_id"], dropped["webhook_id"], other["webhook_id"]})
    short.__exit__(None, None, None)
    receiver.always_fail = False

    server: ServerThread = start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        body = {"url": receiver.url, "kinds": ["gift"], "stream_id": "s1"}
        enabled, deleted, added, enabled_s2, deleted_s2 = await asyncio.gather(
            enable(http, kept["webhook_id"]),
            http.delete(f"/v1/webhooks/{dropped['webhook_id']}", headers=STREAMER),
            http.post("/v1/webhooks", json=body, headers=STREAMER),
            enable(http, other["webhook_id"]),
            http.delete(f"/v1/webhooks/{other['webhook_id']}", headers=STREAMER),
        )
        assert enabled.status_code == 200 and deleted.status_code == 200, enabled.text
        assert added.status_code == 201 and deleted_s2.status_code == 200, added.text
        assert enabled_s2.status_code in (200, 404), enabled_s2.text
        if enabled_s2.status_code == 404:
            assert_error(enabled_s2, 404, "unknown_webhook")
        receiver.secrets.append(added.json()["secret"])

        webhooks = {w["webhook_id"]: w for w in await listed(http)}
        assert set(webhooks) == {kept["webhook_id"], added.json()["webhook_id"]}
        for webhook in webhooks.values():
            assert_active_again(webhook)
        assert await redis.smembers(keys.stream_webhooks_active("s1")) == set(webhooks)
        assert await redis.hget(keys.stream("s1"), keys.WEBHOOK_LOG_FIELD) is not None
        assert not await redis.exists(keys.webhook("s2", other["webhook_id"]))
        assert not await redis.scard(keys.stream_webhooks_active("s2"))
        assert await redis.hget(keys.stream("s2"), keys.WEBHOOK_LOG_FIELD) is None

        new = await gifts(http, 1, "new")
        await gift(http, ALICE, "new-s2", stream_id="s2")
        assert not await redis.exists(keys.webhook_log("s2"))

        async def both_delivered() -> bool:
            got = {(d.message_id, d.signed_with) for d in receiver.delivered()}
            return got == {
                (f"msg_s1_{new[0]}", kept["secret"]),
                (f"msg_s1_{new[0]}", added.json()["secret"]),
            }

        await wait_until(both_delivered, 15, "the new gift at both endpoints of s1")


async def test_an_endpoint_deleted_before_its_enable_runs_stays_deleted(
    start: Any, store: Store, receiver: Receiver, redis: AsyncClient
) -> None:
    """The window the race above may or may not hit: a deletion that lands after the
    enable found the endpoint, before its script runs. The script refuses it and writes
    nothing, for one stream and for all streams."""
    server: ServerThread = start()
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await live_and_funded(http)
        one = await register(http, receiver)
        response = await http.post(
            "/v1/webhooks", json={"url": receiver.url, "kinds": ["gift"]}, headers=STREAMER
        )
        assert response.status_code == 201, response.text
        every = response.json()
        for webhook_id in (one["webhook_id"], every["webhook_id"]):
            deleted = await http.delete(f"/v1/webhooks/{webhook_id}", headers=STREAMER)
            assert deleted.status_code == 200, deleted.text
    server.__exit__(None, None, None)  # its deliverer would tidy `{webhooks}:streams`
    state = await snapshot(redis)
    with pytest.raises(GiftingError) as refused:
        await records.enable(store, "s1", one["webhook_id"])
    assert refused.value.code == ErrorCode.UNKNOWN_WEBHOOK
    with pytest.raises(GiftingError) as refused:
        await following.enable(store, "streamer1", every["webhook_id"])
    assert refused.value.code == ErrorCode.UNKNOWN_WEBHOOK
    assert await snapshot(redis) == state
    assert await redis.hget(keys.stream("s1"), keys.WEBHOOK_LOG_FIELD) is None
