"""/metrics after real traffic over HTTP and WebSocket: every declared metric is fed,
with the labels and values the traffic implies."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from gifting_server import metrics
from gifting_server.ledger.store import Store
from tests.conftest import ServerThread
from tests.factories import auth, fund, live_stream, post_webhook, token
from tests.hub.wsclient import WsClient
from tests.topology import on_cluster

Sample = tuple[str, frozenset[tuple[str, str]]]


def sample(name: str, **labels: str) -> Sample:
    return name, frozenset(labels.items())


async def scrape(http: httpx.AsyncClient) -> dict[Sample, float]:
    response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    return {
        sample(s.name, **s.labels): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


@dataclass
class Scrapes:
    before: dict[Sample, float]
    after: dict[Sample, float]  # with the WebSocket connections still open

    def delta(self, name: str, **labels: str) -> float:
        key = sample(name, **labels)
        return self.after.get(key, 0.0) - self.before.get(key, 0.0)

    def fed(self, family: str) -> bool:
        """Some sample of `family` moved (or appeared) during the traffic."""
        return any(
            name.startswith(family) and value != self.before.get((name, labels), 0.0)
            for (name, labels), value in self.after.items()
        )


GIFT = {"gift_id": "rose", "count": 1}


async def traffic(server: ServerThread, store: Store) -> Scrapes:
    """Two gifts and two refusals over HTTP, a gift and two refusals over WebSocket, a
    payment and its replay, a refused WebSocket token, 404 and 405, a watching viewer."""
    await fund(store, "alice")
    await live_stream(store, "s1")
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        before = await scrape(http)
        alice, poor = auth("alice"), auth("poor")
        for key in ("h1", "h2"):
            sent = await http.post(
                "/v1/streams/s1/gifts", json={**GIFT, "idempotency_key": key}, headers=alice
            )
            assert sent.status_code == 200, sent.text
        broke = await http.post(
            "/v1/streams/s1/gifts", json={**GIFT, "idempotency_key": "h3"}, headers=poor
        )
        assert broke.status_code == 402, broke.text
        bad = await http.post(
            "/v1/streams/s1/gifts",
            json={**GIFT, "count": 0, "idempotency_key": "h4"},
            headers=alice,
        )
        assert bad.status_code == 422, bad.text
        payment = {
            "event_id": "e1",
            "type": "payment.succeeded",
            "user_id": "bob",
            "package_id": "coins_100",
        }
        for _ in range(2):
            assert (await post_webhook(http, payment)).status_code == 200
        assert (await http.get("/v1/nope")).status_code == 404
        assert (await http.delete("/v1/gifts")).status_code == 405
        async with await WsClient.open(server.url, "not-a-token") as refused:
            assert (await refused.closed())[0] == 4001
        async with (
            await WsClient.open(server.url, token("bob")) as watcher,
            await WsClient.open(server.url, token("alice")) as sender,
            await WsClient.open(server.url, token("poor")) as poor_sender,
        ):
            await watcher.subscribe("s1")
            assert (await sender.gift("s1", id="w1"))["type"] == "ack"
            assert (await sender.gift("s1", "unicorn", id="w2"))["code"] == "unknown_gift"
            assert (await poor_sender.gift("s1", id="w3"))["code"] == "insufficient_funds"
            await watcher.events_until(lambda e: e["event_id"] >= 3)
            after = await scrape(http)
    return Scrapes(before, after)


async def test_metrics_count_http_and_websocket_traffic_with_their_labels(
    server: ServerThread, store: Store
) -> None:
    seen = await traffic(server, store)
    gifts = "gifting_gifts_total"
    assert seen.delta(gifts, path="http", outcome="ok") == 2
    assert seen.delta(gifts, path="http", outcome="insufficient_funds") == 1
    assert seen.delta(gifts, path="http", outcome="invalid_request") == 1
    assert seen.delta(gifts, path="ws", outcome="ok") == 1
    assert seen.delta(gifts, path="ws", outcome="unknown_gift") == 1
    assert seen.delta(gifts, path="ws", outcome="insufficient_funds") == 1

    requests = "gifting_http_requests_total"
    # the first scrape is counted once it was answered; the last one is not yet
    assert seen.delta(requests, method="GET", status="200") == 1
    assert seen.delta(requests, method="POST", status="200") == 2 + 2  # gifts, payments
    assert seen.delta(requests, method="POST", status="402") == 1
    assert seen.delta(requests, method="POST", status="422") == 1
    assert seen.delta(requests, method="GET", status="404") == 1
    assert seen.delta(requests, method="DELETE", status="405") == 1

    # a refused or failed gift that reached the script is timed too
    assert seen.delta("gifting_gift_ack_seconds_count", path="http") == 3
    assert seen.delta("gifting_gift_ack_seconds_count", path="ws") == 2
    paid = "gifting_payments_total"
    assert seen.delta(paid, kind="payment.succeeded", replayed="false") == 1
    assert seen.delta(paid, kind="payment.succeeded", replayed="true") == 1
    assert seen.delta("gifting_ws_connections") == 3
    assert seen.delta("gifting_ws_subscriptions") == 1
    assert seen.delta("gifting_ws_drops_total", reason="unauthorized") == 1
    assert seen.delta("gifting_ws_frames_sent_total") >= 1
    assert seen.delta("gifting_ws_events_delivered_total") >= 1  # the WebSocket gift
    assert seen.delta("gifting_event_delivery_seconds_count") >= 1


def declared() -> list[str]:
    """The family name of every metric metrics.py declares."""
    return [
        family.name
        for value in vars(metrics).values()
        if isinstance(value, MetricWrapperBase)
        for family in value.describe()
    ]


# Fed only in the named test: by a fault the ordinary traffic has no way to cause, or
# (speech) by a stream setting and a local engine the ordinary traffic does not use.
FED_ELSEWHERE = {
    "gifting_replica_ack_shortfalls": "tests/ledger/test_replica_ack.py",
    "gifting_gifts_refused_overloaded": "tests/faults/test_overload.py",
    # Measured only while the loop-lag rule is on (off by default).
    "gifting_event_loop_lag_seconds": "tests/faults/test_overload.py",
    "gifting_speech_renders": "tests/api/test_speech.py",
    "gifting_webhook_deliveries": "tests/api/test_webhooks.py",
    "gifting_webhook_backlog": "tests/api/test_webhooks.py",
    "gifting_webhooks_disabled": "tests/api/test_webhooks.py",
}
# Each topology feeds its own batches' counters: on one Redis the gifts' calls
# (`send_gifts`), on a cluster the credits of gifts across slots.
if on_cluster():
    FED_ELSEWHERE |= {
        "gifting_gift_batches": "tests/ledger/test_gift_batch.py",
        "gifting_gifts_batched": "tests/ledger/test_gift_batch.py",
    }
else:
    FED_ELSEWHERE |= {
        "gifting_transfer_credit_calls": "tests/ledger/test_transfer_batch.py",
        "gifting_transfers_batched": "tests/ledger/test_transfer_batch.py",
    }


async def test_every_declared_metric_is_fed_by_the_traffic(
    server: ServerThread, store: Store
) -> None:
    seen = await traffic(server, store)
    assert set(FED_ELSEWHERE) <= set(declared())
    ordinary = [name for name in declared() if name not in FED_ELSEWHERE]
    assert ordinary and [name for name in ordinary if not seen.fed(name)] == []


async def test_a_client_that_hangs_up_mid_body_is_no_server_error(
    server: ServerThread, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """Closing the connection halfway through a body (anyone can, the webhook needs no
    token) is the client's doing: counted as 499, never as a 500 with a traceback."""
    await fund(store, "alice")
    await live_stream(store, "s1")
    requests = "gifting_http_requests_total"
    heads = [
        "POST /v1/payments/webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{",
        f"POST /v1/streams/s1/gifts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token('alice')}"
        "\r\nContent-Length: 100\r\n\r\n{",
    ]
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        before = await scrape(http)
        for head in heads:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(head.encode())
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        deadline = time.monotonic() + 5
        while True:  # the server counts each hang-up once it noticed it
            after = await scrape(http)
            seen = Scrapes(before, after)
            if seen.delta(requests, method="POST", status="499") == 2:
                break
            assert seen.delta(requests, method="POST", status="500") == 0
            assert time.monotonic() < deadline, "the hang-ups were never counted"
            await asyncio.sleep(0.02)
    assert seen.delta("gifting_gifts_total", path="http", outcome="internal_error") == 0
    assert seen.delta("gifting_gifts_total", path="http", outcome="client_closed_request") == 1
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
