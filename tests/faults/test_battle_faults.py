"""A battle survives its worker and its Redis: kill -9 the worker that holds the
battles' lease in the middle of a battle, or kill -9 Redis and start it again from
its append-only file; the battle still ends, its end is published exactly once to
each stream, and its points are exactly the journal's counted gifts."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gifting_server.auth import Role
from gifting_server.ledger import keys
from tests.factories import auth
from tests.faults import assert_reconciled, buy, go_live, send_gift
from tests.faults.conftest import Serve
from tests.hub.conftest import Worker, running_workers
from tests.ledger.support import journal_entries
from tests.topology import AsyncClient, RedisUnderFault, async_client

BATTLES = "\n[battles]\nmin_duration_s = 1\ntick_ms = 100\nrecover_after_ms = 500\n"
DURATION_S = 2


@pytest.fixture
def workers(redis_url: str, tmp_path: Path) -> Iterator[list[Worker]]:
    with running_workers(redis_url, tmp_path, extra_config=BATTLES) as started:
        yield started


async def start_battle(http: httpx.AsyncClient) -> dict[str, Any]:
    await go_live(http, "s1", "streamer1")
    await go_live(http, "s2", "streamer2")
    body = {
        "stream_id": "s1",
        "opponent_stream_id": "s2",
        "duration_s": DURATION_S,
        "idempotency_key": "inv",
    }
    invited = await http.post("/v1/battles", json=body, headers=auth("streamer1", Role.STREAMER))
    assert invited.status_code == 201, invited.text
    battle_id = invited.json()["battle_id"]
    accepted = await http.post(
        f"/v1/battles/{battle_id}/accept", headers=auth("streamer2", Role.STREAMER)
    )
    assert accepted.status_code == 200, accepted.text
    battle: dict[str, Any] = accepted.json()
    return battle


async def ended(http: httpx.AsyncClient, battle_id: str) -> dict[str, Any]:
    """The battle once any worker's ticker ended it (polled, 30 s at most)."""
    for _ in range(600):
        body: dict[str, Any] = (await http.get(f"/v1/battles/{battle_id}")).json()
        if body.get("status") == "ended":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("the battle did not end")


async def assert_ended_once_with_the_journals_points(
    redis: AsyncClient, battle: dict[str, Any]
) -> None:
    battle_id = battle["battle_id"]
    entries = await journal_entries(redis)
    for side in battle["sides"]:
        stream_id = side["stream_id"]
        counted = [
            int(e["coins"])
            for e in entries
            if e.get("battle") == battle_id and e.get("stream") == stream_id
        ]
        assert side["points"] == sum(counted), (stream_id, side["points"], counted)
        rows = await redis.xrange(keys.stream_history(stream_id))
        finals = [
            fields["e"]
            for _, fields in rows
            if '"kind":"battle"' in fields["e"] and '"status":"ended"' in fields["e"]
        ]
        assert len(finals) == 1, finals
    points = {s["stream_id"]: s["points"] for s in battle["sides"]}
    if points["s1"] != points["s2"]:
        assert battle["winner"] == max(points, key=lambda s: points[s])


# A client socket whose server was killed is sometimes reclaimed by the garbage
# collector before its close ran; that warning says nothing about the behaviour here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.filterwarnings("ignore::ResourceWarning")
async def test_killing_the_worker_that_ticks_the_battle_still_ends_it_once(
    workers: list[Worker], redis_url: str
) -> None:
    redis = await async_client(redis_url, decode_responses=True)
    try:
        first, second = workers
        async with (
            httpx.AsyncClient(base_url=first.url, timeout=10) as one,
            httpx.AsyncClient(base_url=second.url, timeout=10) as two,
        ):
            await buy(one, "carol", "coins_500")
            await buy(one, "dave", "coins_500")
            battle = await start_battle(one)
            for i in range(5):
                assert (await send_gift(one, "carol", f"c{i}", stream_id="s1")).status_code == 200
                assert (
                    await send_gift(two, "dave", f"d{i}", "finger_heart", stream_id="s2")
                ).status_code == 200
            holder = await _lease_holder(redis)
            doomed, survivor = (first, second) if holder == first.process.pid else (second, first)
            os.kill(doomed.process.pid, signal.SIGKILL)
            doomed.process.wait(10)
            http = two if survivor is second else one
            for i in range(5, 8):
                assert (await send_gift(http, "carol", f"c{i}", stream_id="s1")).status_code == 200
            final = await ended(http, battle["battle_id"])
            assert final["winner"] == "s2"  # 8 roses against 25 coins of hearts
            await assert_ended_once_with_the_journals_points(redis, final)
            await assert_reconciled(redis)
    finally:
        await redis.aclose()


async def _lease_holder(redis: AsyncClient) -> int:
    """The pid of the worker whose ticker holds the battles' lease (it names itself)."""
    for _ in range(200):
        holder = await redis.get(keys.BATTLES_LEASE)
        if holder:
            return int(str(holder).partition(":")[0])
        await asyncio.sleep(0.05)
    raise AssertionError("no worker took the battles' lease")


async def test_a_redis_killed_and_restarted_during_a_battle_still_ends_it_once(
    own_redis: RedisUnderFault, own_client: AsyncClient, serve: Serve
) -> None:
    server = serve(own_redis.url, battles={"min_duration_s": 1, "tick_ms": 100})
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
        await buy(http, "carol", "coins_500")
        await buy(http, "dave", "coins_500")
        battle = await start_battle(http)
        for i in range(4):
            assert (
                await send_gift(http, "carol", f"c{i}", "finger_heart", stream_id="s1")
            ).status_code == 200
            assert (await send_gift(http, "dave", f"d{i}", stream_id="s2")).status_code == 200
        await asyncio.to_thread(own_redis.kill)
        await asyncio.to_thread(own_redis.restart)
        answer = None
        for i in range(200):  # the server finds its Redis again by itself
            answer = await send_gift(http, "dave", f"after{i}", stream_id="s2")
            if answer.status_code == 200:
                break
            await asyncio.sleep(0.05)
        assert answer is not None and answer.status_code == 200, answer and answer.text
        final = await ended(http, battle["battle_id"])
        assert final["winner"] == "s1"
        await assert_ended_once_with_the_journals_points(own_client, final)
        await assert_reconciled(own_client)
