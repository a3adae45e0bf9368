"""Battles against the real Redis (single or cluster, both gift paths): many gifters on
both sides racing the end, retries, and the audit of the points."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gifting_server.auth import Identity, Role
from gifting_server.config import Settings
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import alerts, battle_record, battle_steps, battles, gifts, keys
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import Store, connect
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import journal_entries

ONE = Identity("streamer1", "Streamer One", Role.STREAMER)
TWO = Identity("streamer2", "Streamer Two", Role.STREAMER)
GIFTERS = 24
PRICES = {"rose": 1, "finger_heart": 5, "doughnut": 30}


@pytest.fixture
async def ledger(settings: Settings) -> AsyncIterator[Store]:
    """A store whose battles may last a second (`[battles] min_duration_s`)."""
    short = dataclasses.replace(
        settings, battles=dataclasses.replace(settings.battles, min_duration_s=1)
    )
    assert short.redis_url
    store = Store(await connect(short.redis_url, short.limits.request_timeout_s), short)
    await live_stream(store, "s1", "streamer1")
    await live_stream(store, "s2", "streamer2")
    yield store
    await store.close()


async def start_battle(store: Store, duration_s: int = 1) -> dict[str, Any]:
    invited, created = await battles.invite(store, ONE, "s1", "s2", duration_s, "inv1")
    assert created and invited["status"] == "invited"
    live = await battles.accept(store, TWO, invited["battle_id"])
    assert live["status"] == "live"
    return live


async def end_of(store: Store, battle_id: str, within_s: float = 10) -> dict[str, Any]:
    """Drive the battle to its end as any worker's ticker would: each side closes once
    its Redis clock passed `ends_at` (the steps say how long is left)."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        record = await battle_record.read_known(store, battle_id)
        record = await battle_steps.advance(store, record)
        if record.status == "ended":
            return await battles.get(store, battle_id)
        await asyncio.sleep(0.02)
    raise AssertionError("the battle did not end")


def counted(entries: list[dict[str, str]], battle_id: str, stream_id: str) -> list[dict[str, str]]:
    return [
        e
        for e in entries
        if e.get("type") == "gift" and e.get("battle") == battle_id and e["stream"] == stream_id
    ]


async def test_racing_gifters_on_both_sides_count_exactly_what_the_journal_counted(
    ledger: Store,
) -> None:
    senders = [viewer(f"fan{i}") for i in range(GIFTERS)]
    for sender in senders:
        await fund(ledger, sender.user_id, "coins_500")
    acked: list[tuple[Identity, str, str, int, str]] = []  # sender, stream, gift, count, key
    rng = random.Random(7)
    ends_at: int | None = None  # the battle's, once it started
    flowing = asyncio.Event()  # a gift went through

    async def gifter(sender: Identity) -> None:
        n = 0
        # until well past the end by this machine's clock, which Redis's shares here
        while ends_at is None or time.time() * 1000 < ends_at + 300:
            stream_id, gift_id = rng.choice(("s1", "s2")), rng.choice(list(PRICES))
            key = f"{sender.user_id}-{n}"
            n += 1
            try:
                await gifts.send_gift(ledger, sender, stream_id, gift_id, 1, key)
            except GiftingError as e:
                assert e.code in (ErrorCode.RATE_LIMITED, ErrorCode.INSUFFICIENT_FUNDS)
                await asyncio.sleep(0.02)
                continue
            acked.append((sender, stream_id, gift_id, 1, key))
            flowing.set()
            await asyncio.sleep(rng.random() * 0.03)

    # The gifts flow before the battle starts: on a machine busy with other tests the
    # gifters' first gifts once took longer than the whole battle of a second.
    gifting = asyncio.gather(*(gifter(s) for s in senders))
    await flowing.wait()
    battle = await start_battle(ledger)
    battle_id, ends_at = battle["battle_id"], battle["ends_at"]
    await gifting
    ended = await end_of(ledger, battle_id)

    # retries of acknowledged gifts with the same key count nothing twice
    for sender, stream_id, gift_id, count, key in acked[:: max(1, len(acked) // 20)]:
        receipt = await gifts.send_gift(ledger, sender, stream_id, gift_id, count, key)
        assert receipt.replayed
    assert await battles.get(ledger, battle_id) == ended

    entries = await journal_entries(ledger.redis)
    points = {}
    for side in ended["sides"]:
        mine = counted(entries, battle_id, side["stream_id"])
        assert all(int(e["battle_at"]) < ends_at for e in mine)
        points[side["stream_id"]] = side["points"]
        assert side["points"] == sum(int(e["coins"]) for e in mine)
        top = sorted(
            (
                (sum(int(e["coins"]) for e in mine if e["user"] == u), u)
                for u in {e["user"] for e in mine}
            ),
            reverse=True,
        )
        assert [t["coins"] for t in side["top"]] == [c for c, _ in top[:3]]
    # the race happened: gifts were counted, and gifts acknowledged after the end were not
    gifts_to_battle = [e for e in entries if e.get("type") == "gift" and e["stream"] in points]
    assert any(e.get("battle") for e in gifts_to_battle)
    assert any(not e.get("battle") for e in gifts_to_battle if int(e["at"]) >= ends_at)
    assert len(gifts_to_battle) == len(acked)
    if points["s1"] == points["s2"]:
        assert ended["winner"] is None
    else:
        assert ended["winner"] == max(points, key=lambda s: points[s])
    report = await reconcile(ledger.redis, ledger.settings.economy.creator_share_bps)
    assert report.ok, report.format()


async def test_a_gift_outside_a_battle_and_a_test_alert_count_for_no_battle(ledger: Store) -> None:
    await fund(ledger, "alice", "coins_500")
    alice = viewer("alice")
    await gifts.send_gift(ledger, alice, "s1", "rose", 2, "before")
    battle = await start_battle(ledger, 60)
    await alerts.control_alerts(ledger, ONE, "s1", "test", gift_id="doughnut")
    await gifts.send_gift(ledger, alice, "s1", "rose", 3, "during")
    shown = await battles.get(ledger, battle["battle_id"])
    assert [s["points"] for s in shown["sides"]] == [3, 0]
    entries = [e for e in await journal_entries(ledger.redis) if e.get("type") == "gift"]
    assert [e.get("battle") for e in entries] == [None, battle["battle_id"]]


async def test_the_end_is_published_and_audited_once_however_often_it_is_driven(
    ledger: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gifting_server.audit")
    battle = await start_battle(ledger)
    ended = await end_of(ledger, battle["battle_id"])
    record = await battle_record.read_known(ledger, battle["battle_id"])
    for _ in range(3):
        await battle_steps.advance(ledger, record)
        await battle_steps.finish(ledger, record)
        await battle_steps.close_for_good(ledger, record)
    for stream_id in ("s1", "s2"):
        rows = await ledger.redis.xrange(keys.stream_history(stream_id))
        finals = [
            f["e"] for _, f in rows if '"kind":"battle"' in f["e"] and '"status":"ended"' in f["e"]
        ]
        assert len(finals) == 1, finals
    assert ended["status"] == "ended"
    lines = [
        getattr(r, "fields", {})
        for r in caplog.records
        if r.name == "gifting_server.audit" and r.getMessage() == "battle_ended"
    ]
    assert lines == [
        {
            "battle_id": battle["battle_id"],
            "streams": ["s1", "s2"],
            "points": [0, 0],
            "winner": None,
            "reason": "time",
        }
    ]
