"""kill -9 the worker in the middle of a webhook delivery (the receiver holds the
request): after a new worker starts, every event of the stream reaches the
receiver, in order, each message id at least once (the one in flight again), none
lost."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from gifting_server.auth import Role
from tests.factories import auth
from tests.faults import buy, go_live, send_gift, wait_until
from tests.history import history_events
from tests.hub.conftest import running_workers
from tests.topology import async_client
from tests.webhook_receiver import receiving

# Deliveries at once, and a dead worker's lease over within a second and a half.
WEBHOOKS_CONFIG = """
[webhooks]
allow_private = true
poll_ms = 20
retry_base_ms = 20
retry_max_ms = 200
timeout_s = 1.0
lease_ms = 1500
"""
STREAMER = auth("streamer1", Role.STREAMER)


async def gifts(http: httpx.AsyncClient, prefix: str, count: int) -> list[int]:
    sent = []
    for i in range(count):
        response = await send_gift(http, "carol", f"{prefix}-{i}")
        assert response.status_code == 200, response.text
        sent.append(response.json()["event_id"])
    return sent


async def gift_events(redis_url: str, after: int) -> list[int]:
    """The stream's gift events (its gifts and the streaks' ends) past `after`."""
    client = await async_client(redis_url, decode_responses=True)
    try:
        stored = await history_events(client, "s1", since=after)
    finally:
        await client.aclose()
    return [int(event["event_id"]) for event in stored if event["kind"] == "gift"]


@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_a_worker_killed_mid_delivery_loses_nothing(redis_url: str, tmp_path: Path) -> None:
    async with receiving() as receiver:
        first_dir, second_dir = tmp_path / "first", tmp_path / "second"
        first_dir.mkdir()
        second_dir.mkdir()
        with running_workers(redis_url, first_dir, 1, WEBHOOKS_CONFIG) as [worker]:
            async with httpx.AsyncClient(base_url=worker.url, timeout=10) as http:
                await go_live(http)
                await buy(http, "carol", "coins_1000")
                body: dict[str, Any] = {"url": receiver.url, "kinds": ["gift"], "stream_id": "s1"}
                response = await http.post("/v1/webhooks", json=body, headers=STREAMER)
                assert response.status_code == 201, response.text
                created = response.json()
                receiver.secrets.append(created["secret"])
                sent = await gifts(http, "a", 5)
                await receiver.wait_for(5)
                receiver.hold = True
                arrived = receiver.arrived
                sent += await gifts(http, "b", 5)
                await receiver.wait_for_arrivals(arrived + 1)  # a delivery in flight
                in_flight = receiver.arrivals[-1]
                worker.process.send_signal(signal.SIGKILL)
                worker.process.wait(timeout=10)
        receiver.hold = False
        receiver.release.set()
        with running_workers(redis_url, second_dir, 1, WEBHOOKS_CONFIG) as [worker]:
            async with httpx.AsyncClient(base_url=worker.url, timeout=10) as http:
                sent += await gifts(http, "c", 5)
                expected = await gift_events(redis_url, 0)  # registered before any
                assert set(sent) <= set(expected)

                async def all_delivered() -> bool:
                    delivered = {e["event_id"] for e in receiver.events()}
                    return set(expected) <= delivered

                await wait_until(all_delivered, 20, "every event delivered after the restart")
        first_arrivals = [e["event_id"] for e in receiver.events()]
        assert first_arrivals == sorted(first_arrivals)  # in order
        assert first_arrivals[: len(expected)] == expected  # each one, none lost
        assert all(d.signed_with == created["secret"] for d in receiver.deliveries)
        ids = [d.message_id for d in receiver.delivered()]
        held = [d for d in receiver.deliveries if d.message_id == in_flight]
        assert len(held) >= 2, "the message in flight is sent again"
        assert len(ids) >= len(expected)
