"""A gift across slots under attack: steps interleaved in every order, keys reused,
records corrupted, odd names, a streak across a pending transfer. Each test drives
the steps of ledger/transfers.py against one real Redis."""

from __future__ import annotations

import asyncio
import dataclasses

import httpx
import pytest

from gifting_server.config import Settings
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys, reconcile, streams, transfers, wallet
from gifting_server.ledger.clock import DAY_MS
from gifting_server.ledger.store import Store, connect
from tests.conftest import ServerThread
from tests.factories import fund, live_stream, token, viewer
from tests.faults import buy, go_live
from tests.faults import send_gift as send_http
from tests.hub.wsclient import WsClient
from tests.ledger.support import T0, FakeClock
from tests.ledger.test_concurrency import assert_reconciled
from tests.ledger.transfers_support import (
    ALICE,
    clock_of,
    debit_only,
    gift_events,
    gift_records,
    ledger,
    pending,
    relay,
    send,
    settings,
)

__all__ = ["ledger", "settings"]


async def report_of(store: Store) -> reconcile.Report:
    return await reconcile.reconcile(store.redis, store.settings.economy.creator_share_bps)


# --- defects ---------------------------------------------------------------------


async def test_a_key_reused_after_its_record_expired_is_a_new_gift_credited_in_full(
    ledger: Store,
) -> None:
    """The credited records are written after the idempotency record (at once, or
    seconds later by the relay or a retry), so they outlive it: a key reused once the
    record expired is a new gift (as on the one-script path) and must be credited, not
    answered the first transfer's credit."""
    await debit_only(ledger)
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger) == 1  # the credited records are written now, after the debit
    await ledger.redis.delete(keys.idempotency("alice", "k1"))  # its TTL ran out first

    receipt = await send(ledger)
    assert not receipt.replayed and receipt.coins == 90
    assert len([e for e in await gift_events(ledger) if not e["streak_end"]]) == 2
    assert (await wallet.read_wallet(ledger, "streamer1"))[
        "diamonds"
    ] == 5  # 10 coins at a 50% share
    assert len(await gift_records(ledger)) == 2
    await assert_reconciled(ledger)


async def test_an_unreadable_record_does_not_stop_the_relay_finishing_the_others(
    ledger: Store,
) -> None:
    """A record whose transfer is not JSON (or any field is missing) cannot be finished;
    the relay logs it and goes on with the rest of its pass."""
    outbox = keys.outbox("alice")
    await ledger.redis.zadd(outbox, {"alice:broken": T0 - 1})
    await ledger.redis.set(keys.idempotency("alice", "broken"), "fp\n95\n\n{not json")
    await ledger.redis.zadd(outbox, {"alice:partial": T0 - 1})
    await ledger.redis.set(keys.idempotency("alice", "partial"), 'fp\n95\n\n{"sender":"alice"}')
    await debit_only(ledger)
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger) == 1
    assert await pending(ledger) == ["alice:broken", "alice:partial"]
    assert len(await gift_events(ledger)) == 1


async def test_a_wrong_typed_record_does_not_stop_the_relay_finishing_the_others(
    ledger: Store,
) -> None:
    outbox = keys.outbox("alice")
    await ledger.redis.zadd(outbox, {"alice:hash": T0 - 1})
    await ledger.redis.hset(keys.idempotency("alice", "hash"), "planted", "1")
    await debit_only(ledger)
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger) == 1
    assert "alice:hash" in await pending(ledger)
    assert len(await gift_events(ledger)) == 1


async def test_a_full_batch_of_transfers_that_cannot_finish_does_not_starve_a_newer_one(
    ledger: Store,
) -> None:
    """Transfers whose record is gone stay in the outbox (reconcile reports them): they
    must not take every place of the relay's batch, pass after pass."""
    outbox = keys.outbox("alice")
    await ledger.redis.zadd(
        outbox, {f"alice:lost{i}": T0 - 10_000 + i for i in range(transfers.RELAY_BATCH)}
    )
    await debit_only(ledger)
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    finished = 0
    for _ in range(3):
        finished += await relay(ledger)
        clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert finished == 1
    assert "alice:k1" not in await pending(ledger)
    assert len(await pending(ledger)) == transfers.RELAY_BATCH


async def test_reconcile_counts_a_transfer_credited_but_still_in_the_outbox_once(
    ledger: Store,
) -> None:
    """A worker that dies after both credits and before clearing the outbox: the journal
    holds the gift, so its coins are with the streamer, not in transit as well."""
    debited = await debit_only(ledger)
    credited = await transfers.credit_stream(ledger, debited.transfer)
    await transfers.credit_streamer(ledger, debited.transfer, credited, "")
    report = await report_of(ledger)
    assert report.in_transit == 0, report.format()
    assert all("alice:k1" in problem for problem in report.problems), report.format()


async def test_reconcile_reads_a_transfer_credited_on_its_stream_only_without_false_alarms(
    ledger: Store,
) -> None:
    """Died between the stream's and the streamer's credit: the stream's board already
    holds the gift, the journal not yet; only the pending transfer is a problem."""
    debited = await debit_only(ledger)
    await transfers.credit_stream(ledger, debited.transfer)
    report = await report_of(ledger)
    assert report.in_transit == 5, report.format()
    assert all("alice:k1" in problem for problem in report.problems), report.format()


async def test_a_pending_transfer_finished_late_does_not_move_the_streaks_last_tap_back(
    ledger: Store,
) -> None:
    """k1 is debited, its worker dies; k2 lands a second later; the retry of k1 joins
    the streak (its debit was earlier). The streak's last tap stays k2's, so k3 within
    the window after k2 goes on with the combo rather than ending the streak."""
    await debit_only(ledger, "k1")
    clock_of(ledger).advance(1000)
    assert (await send(ledger, "k2")).combo == 1
    clock_of(ledger).advance(500)
    assert (await send(ledger, "k1")).combo == 2  # the retry finishes k1
    clock_of(ledger).now = T0 + 1000 + ledger.settings.limits.combo_window_ms
    k3 = await send(ledger, "k3")
    assert k3.combo == 3
    assert [e["streak_end"] for e in await gift_events(ledger)] == [False, False, False]


# --- what held --------------------------------------------------------------------


async def test_a_key_with_colons_is_relayed_and_reconciled(ledger: Store) -> None:
    await debit_only(ledger, "a:b::c:")
    assert await pending(ledger) == ["alice:a:b::c:"]
    report = await report_of(ledger)
    assert report.in_transit == 5 and len(report.problems) == 1, report.format()
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger) == 1
    [entry] = await gift_records(ledger)
    assert entry["key"] == "a:b::c:"
    assert (await send(ledger, "a:b::c:")).replayed
    await assert_reconciled(ledger)


@pytest.mark.parametrize(
    "name",
    ["line\nbreak\r\n", 'quote " and \\ back', "pipe | colon : x", "é🎁\u2028\u0000", "}\n0\n\n{"],
)
async def test_a_sender_name_of_any_characters_survives_the_record_and_the_event(
    ledger: Store, name: str
) -> None:
    odd = dataclasses.replace(ALICE, name=name)
    await debit_only(ledger, "k1", odd)
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger) == 1
    await send(ledger, "k2", odd)
    events = await gift_events(ledger)
    assert [e["sender"] for e in events if not e["streak_end"]] == [
        {"id": "alice", "name": name}
    ] * 2
    assert (await send(ledger, "k1", odd)).replayed
    await assert_reconciled(ledger)


async def test_two_workers_retrying_and_relaying_at_once_credit_once(
    ledger: Store, settings: Settings
) -> None:
    assert settings.redis_url
    other = Store(await connect(settings.redis_url, 5.0), settings)
    other.clock = FakeClock(T0 + 60_000)  # its clock runs a minute ahead
    try:
        for i in range(20):
            await debit_only(ledger, f"k{i}")
        clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
        calls = [relay(ledger), relay(other), relay(other), relay(ledger)]
        calls += [send(s, f"k{i}") for i in range(20) for s in (ledger, other)]
        await asyncio.gather(*calls)
        assert len(await gift_events(ledger)) == 20
        assert await pending(ledger) == []
        assert (await wallet.read_wallet(ledger, "streamer1"))[
            "diamonds"
        ] == 50  # 100 coins at a 50% share
        await assert_reconciled(ledger)
    finally:
        await other.close()


async def test_a_retry_with_a_different_request_while_pending_is_a_conflict(
    ledger: Store,
) -> None:
    await debit_only(ledger)
    with pytest.raises(GiftingError) as refused:
        await send(ledger, "k1", gift_id="rose")
    assert refused.value.code is ErrorCode.IDEMPOTENCY_CONFLICT
    assert await pending(ledger) == ["alice:k1"]
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger) == 1
    await assert_reconciled(ledger)


async def test_a_stream_ended_and_restarted_between_debit_and_credit(ledger: Store) -> None:
    await debit_only(ledger)
    await streams.end_stream(ledger, "streamer1", "s1")
    await live_stream(ledger)
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger) == 1
    assert (await send(ledger, "k2")).event_id > 2
    await assert_reconciled(ledger)


@pytest.mark.parametrize("across_slots", [False, True], ids=["one script", "across slots"])
async def test_a_gift_from_a_worker_whose_clock_is_behind_keeps_the_streaks_last_tap(
    ledger: Store, settings: Settings, across_slots: bool
) -> None:
    """Workers' clocks differ: a gift stamped earlier than the streak's last tap joins
    the streak without moving the tap back (send_gift and credit_stream share it)."""
    ahead = Store(ledger.redis, dataclasses.replace(settings, gifts_across_slots=across_slots))
    behind = Store(ledger.redis, ahead.settings)
    ahead.clock, behind.clock = FakeClock(T0 + 1000), FakeClock(T0)
    assert (await send(ahead, "k1")).combo == 1
    assert (await send(behind, "k2")).combo == 2
    clock_of(ahead).advance(ledger.settings.limits.combo_window_ms)
    assert (await send(ahead, "k3")).combo == 3
    assert [e["streak_end"] for e in await gift_events(ledger)] == [False, False, False]


async def test_a_retry_of_a_gift_sent_by_the_one_script_is_answered_its_receipt(
    ledger: Store, settings: Settings
) -> None:
    """Keys moved from one Redis to a cluster keep their idempotency records: a retry
    of a gift send_gift made before the move replays it; it is neither a conflict nor
    a second gift."""
    before = Store(ledger.redis, dataclasses.replace(settings, gifts_across_slots=False))
    before.clock = ledger.clock
    first = await send(before)
    receipt = await send(ledger)
    assert receipt == dataclasses.replace(first, replayed=True)
    assert await pending(ledger) == []
    assert len(await gift_events(ledger)) == 1
    await assert_reconciled(ledger)


async def test_gifts_across_slots_over_http_and_websocket_with_racing_retries(
    settings: Settings,
) -> None:
    """A server whose gifts run in steps: the same key sent at once many times over
    HTTP, and a WebSocket gift, from a sender whose name is odd; each gift once."""
    name = 'Ma"x\n| : é🎁'
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await go_live(http, "s1")
            await buy(http, "carol", "coins_1000")
            answers = await asyncio.gather(
                *(send_http(http, "carol", "x:y:1", name=name) for _ in range(12))
            )
            assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
            assert len({r.content for r in answers}) == 1  # the same receipt to every one
            async with await WsClient.open(server.url, token("carol", name=name)) as ws:
                assert (await ws.subscribe("s1"))["type"] == "subscribed"
                first = await ws.gift("s1", id="w:1")
                again = await ws.gift("s1", id="w:1")
                assert first["type"] == again["type"] == "ack", (first, again)
                assert first["event_id"] == again["event_id"]
    store = Store(await connect(settings.redis_url or "", 5.0), settings)
    try:
        events = await gift_events(store)
        assert [e["sender"] for e in events] == [{"id": "carol", "name": name}] * 2
        assert await pending(store, [viewer("carol")]) == []
        await assert_reconciled(store)
    finally:
        await store.close()


async def test_many_pending_transfers_are_finished_a_batch_per_outbox_and_pass(
    ledger: Store,
) -> None:
    many = 2 * transfers.RELAY_BATCH + 50
    await fund(ledger, "alice", "coins_10000")
    for i in range(many):
        await debit_only(ledger, f"m{i}", gift_id="rose")
        clock_of(ledger).advance(1000)  # within the gift rate
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    passes = [await relay(ledger) for _ in range(4)]
    assert passes == [transfers.RELAY_BATCH, transfers.RELAY_BATCH, 50, 0]
    assert len(await gift_events(ledger)) == many
    await assert_reconciled(ledger)


async def test_a_transfer_finished_after_its_hold_ended_is_paid_out_at_once(
    ledger: Store,
) -> None:
    """The hold is fixed at the debit: a transfer the relay finishes after it ended
    lands in a released bucket, so its diamonds can be cashed out, and a later gift's
    new bucket keeps them released, not held again."""
    economy = dataclasses.replace(ledger.settings.economy, cashout_min_diamonds=2)
    ledger.settings = dataclasses.replace(ledger.settings, economy=economy)
    await debit_only(ledger, "k1")
    clock_of(ledger).advance(8 * DAY_MS)  # past the 7 days' hold
    assert await relay(ledger) == 1
    await send(ledger, "k2")  # held for 7 days from now
    paid = await wallet.cashout(ledger, "streamer1", 2, "c1")
    assert paid.diamonds == 2
    with pytest.raises(GiftingError) as refused:
        await wallet.cashout(ledger, "streamer1", 2, "c2")  # k2's are held
    assert refused.value.code is ErrorCode.INSUFFICIENT_DIAMONDS
    await assert_reconciled(ledger)
