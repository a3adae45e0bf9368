"""A gift across slots (ledger/transfers.py), step by step on one Redis: what each
crash point leaves, and that the relay and retries finish it exactly once. A Redis
Cluster runs the same steps (tests/cluster)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
from collections.abc import Awaitable, Callable

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, reconcile, streams, transfers, wallet
from gifting_server.ledger.clock import DAY_MS, day_number
from gifting_server.ledger.store import Store, connect
from tests import faults
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import T0, assert_refused
from tests.ledger.test_concurrency import assert_reconciled
from tests.ledger.transfers_support import (
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


async def test_a_gift_across_slots_leaves_nothing_pending_and_reconciles(ledger: Store) -> None:
    receipt = await send(ledger)
    assert (receipt.coins, receipt.combo, receipt.replayed) == (95, 1, False)
    assert await pending(ledger) == []
    assert len(await gift_events(ledger)) == 1
    assert (await wallet.read_wallet(ledger, "streamer1"))["diamonds"] == 2
    await assert_reconciled(ledger)


async def test_a_transfer_its_worker_left_behind_is_finished_by_the_relay_once(
    ledger: Store,
) -> None:
    await debit_only(ledger)
    assert (await wallet.read_wallet(ledger, "alice"))["coins"] == 95
    assert await pending(ledger) == ["alice:k1"]
    report = await reconcile.reconcile(ledger.redis, ledger.settings.economy.creator_share_bps)
    assert report.in_transit == 5 and len(report.problems) == 1, report.format()
    assert "alice:k1" in report.problems[0]

    assert await relay(ledger) == 0  # too young: its worker may still be finishing it
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger) == 1
    assert await relay(ledger) == 0
    assert await pending(ledger) == []
    assert len(await gift_events(ledger)) == 1
    assert (await wallet.read_wallet(ledger, "streamer1"))["diamonds"] == 2
    await assert_reconciled(ledger)


async def test_a_retry_finishes_a_pending_transfer_with_the_first_requests_values(
    ledger: Store,
) -> None:
    await debit_only(ledger)
    clock_of(ledger).advance(2 * DAY_MS)  # the retry comes two days later
    receipt = await send(ledger)
    assert receipt.replayed and receipt.coins == 95
    [entry] = await gift_records(ledger)
    assert entry["at"] == str(T0)  # the debit's time, not the retry's
    day_board = keys.channel_leaderboard("streamer1", "day", day_number(T0))
    assert await ledger.redis.zscore(day_board, "alice") == 5
    assert await pending(ledger) == []
    assert await send(ledger) == receipt
    await assert_reconciled(ledger)


async def test_a_relay_that_died_between_the_two_credits_is_finished_without_doubling(
    ledger: Store,
) -> None:
    await debit_only(ledger)
    record = await ledger.redis.get(keys.idempotency("alice", "k1"))
    transfer = transfers.Transfer.decoded(record.split("\n", 3)[3])
    first = await transfers.credit_stream(ledger, transfer)  # ... and then it died
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger) == 1
    assert len(await gift_events(ledger)) == 1
    assert await ledger.redis.zscore(keys.stream_leaderboard("s1"), "alice") == 5
    assert (await send(ledger)).event_id == first.event_id
    await assert_reconciled(ledger)


async def test_concurrent_retries_and_relays_credit_a_pending_transfer_once(
    ledger: Store,
) -> None:
    await debit_only(ledger)
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    results = await asyncio.gather(
        *(send(ledger) for _ in range(8)), *(relay(ledger) for _ in range(4))
    )
    receipts = {r for r in results if isinstance(r, gifts.GiftReceipt)}
    assert len(receipts) == 1
    assert len(await gift_events(ledger)) == 1
    assert (await wallet.read_wallet(ledger, "streamer1"))["diamonds"] == 2
    assert await pending(ledger) == []
    await assert_reconciled(ledger)


@pytest.mark.parametrize(
    ("stream", "sender", "code"),
    [
        ("nowhere", "alice", ErrorCode.UNKNOWN_STREAM),
        ("ended", "alice", ErrorCode.STREAM_NOT_LIVE),
        ("s1", "streamer1", ErrorCode.SELF_GIFT),
    ],
)
async def test_the_streams_rules_refuse_before_any_coin_moves(
    ledger: Store, stream: str, sender: str, code: ErrorCode
) -> None:
    await live_stream(ledger, "ended")
    await streams.end_stream(ledger, "streamer1", "ended")
    await fund(ledger, "streamer1")
    rose = ledger.settings.gift("rose")
    assert rose is not None
    call = gifts.run_send_gift(ledger, viewer(sender), stream, rose, 1, "k9")
    await assert_refused(ledger, code, call)


async def test_a_retry_after_the_stream_ended_answers_the_first_result(ledger: Store) -> None:
    receipt = await send(ledger)
    await streams.end_stream(ledger, "streamer1", "s1")
    assert await send(ledger) == dataclasses.replace(receipt, replayed=True)
    with pytest.raises(GiftingError) as refused:
        await send(ledger, key="k2")
    assert refused.value.code is ErrorCode.STREAM_NOT_LIVE


async def test_a_gift_debited_before_its_stream_ended_still_lands(ledger: Store) -> None:
    await debit_only(ledger)
    await streams.end_stream(ledger, "streamer1", "s1")
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger) == 1
    assert (await wallet.read_wallet(ledger, "streamer1"))["diamonds"] == 2
    await assert_reconciled(ledger)


async def test_a_wrong_typed_key_on_the_credit_side_keeps_the_coins_in_transit_and_is_named(
    ledger: Store,
) -> None:
    """The credits do not check the type of the keys they write unread (docs/performance.md):
    the step fails after its first write, and reconcile names the key to repair."""
    board = keys.stream_leaderboard("s1")
    await ledger.redis.set(board, "planted")  # only someone with Redis access can
    with pytest.raises(GiftingError) as refused:
        await send(ledger)
    assert refused.value.code is ErrorCode.STORAGE_CORRUPT
    assert await pending(ledger) == ["alice:k1"]
    report = await reconcile.reconcile(ledger.redis, ledger.settings.economy.creator_share_bps)
    assert report.in_transit == 5 and not report.ok
    assert f"storage: {board} is a string, not a zset" in report.format()


async def test_a_transfer_whose_record_expired_is_left_for_reconcile_to_report(
    ledger: Store,
) -> None:
    await debit_only(ledger)
    await ledger.redis.delete(keys.idempotency("alice", "k1"))  # as if it outlived its TTL
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger) == 0
    report = await reconcile.reconcile(ledger.redis, ledger.settings.economy.creator_share_bps)
    assert any("record is gone" in problem for problem in report.problems), report.format()


def elsewhere(store: Store, work: Callable[[Store], Awaitable[int]]) -> int:
    """`work` as another worker does it: its own connection and event loop, in a thread
    the caller waits for (so it runs exactly between two of the caller's steps)."""

    async def run() -> int:
        assert store.settings.redis_url
        client = await connect(store.settings.redis_url, store.settings.limits.request_timeout_s)
        other = Store(client, store.settings)
        other.clock = store.clock
        try:
            return await work(other)
        finally:
            await other.close()

    finished: list[int] = []
    thread = threading.Thread(target=lambda: finished.append(asyncio.run(run())))
    thread.start()
    thread.join()
    return finished[0]


def relay_elsewhere(store: Store) -> int:
    """The relay of another worker, run between two of the caller's steps."""
    return elsewhere(store, relay)


async def credit_stream_only(store: Store) -> int:
    """Step 3 of alice's transfer k1, as a worker that then stalls (or dies) before
    step 4 leaves it."""
    record = await store.redis.get(keys.idempotency("alice", "k1"))
    await transfers.credit_stream(store, transfers.Transfer.decoded(record.split("\n", 3)[3]))
    return 1


async def test_a_transfer_a_relay_finishes_while_reconcile_reads_is_named_not_taken_for_a_defect(
    ledger: Store,
) -> None:
    """reconcile's reads are not one snapshot: a transfer credited after the journals
    were read and before the wallets were shows as differences. The report names the
    transfer that moved, so they are not taken for a defect, and the next run passes."""
    await debit_only(ledger)
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    relayed: list[int] = []

    def relay_once(journal: str, entry: dict[str, str]) -> None:
        if not relayed:  # the journals are read: finish the transfer now
            relayed.append(relay_elsewhere(ledger))

    share = ledger.settings.economy.creator_share_bps
    report = await reconcile.reconcile(ledger.redis, share, on_entry=relay_once)
    assert relayed == [1]
    assert not report.ok
    moved = [p for p in report.problems if reconcile.MOVED_WHILE_READ in p]
    assert moved and "alice:k1" in moved[0], report.format()
    await assert_reconciled(ledger)


TRANSIT_LINE = re.compile(
    r"^gift transfer alice:k1: (credited, but still in its outbox|.* not yet credited) "
)


@pytest.mark.parametrize("step", reconcile.READ_STEPS)
@pytest.mark.parametrize("moves", ["stream credit", "relay", "relay after the stream credit"])
async def test_a_transfer_moved_between_any_two_of_reconciles_reads_is_named(
    ledger: Store, step: str, moves: str
) -> None:
    """Whichever of reconcile's reads another worker's step of a transfer falls
    between (its stream credited; the relay finishing it; the relay finishing one
    whose stream was credited before), the report either agrees with the ledger but
    for the transfer in transit, or names the transfer as moved: a difference it
    makes is never left to pass for a defect. Settled, the ledger reconciles."""
    await debit_only(ledger)
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    if moves == "relay after the stream credit":
        await credit_stream_only(ledger)
    work = credit_stream_only if moves == "stream credit" else relay
    ran: list[int] = []

    def move_at(name: str) -> None:
        if name == step:
            ran.append(elsewhere(ledger, work))

    share = ledger.settings.economy.creator_share_bps
    report = await reconcile.reconcile(ledger.redis, share, on_step=move_at)
    assert ran == [1]
    named = any(reconcile.MOVED_WHILE_READ in p and "alice:k1" in p for p in report.problems)
    assert named or all(TRANSIT_LINE.match(p) for p in report.problems), report.format()
    assert await relay(ledger) == (0 if moves != "stream credit" else 1)
    await assert_reconciled(ledger)


async def test_a_moved_transfer_does_not_hide_a_real_difference_beside_it(ledger: Store) -> None:
    """A report that names a moved transfer is waited out by the fault tests, as one
    read on a moving ledger: a real difference reported beside it must still fail them
    once the ledger is settled."""
    await debit_only(ledger)
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    await ledger.redis.hincrby(keys.wallet("alice"), "coins", 7)  # from nowhere
    ran: list[int] = []

    def relay_at(name: str) -> None:
        if name == "wallets":
            ran.append(relay_elsewhere(ledger))

    share = ledger.settings.economy.creator_share_bps
    report = await reconcile.reconcile(ledger.redis, share, on_step=relay_at)
    assert ran == [1]
    assert any(reconcile.MOVED_WHILE_READ in p for p in report.problems), report.format()
    with pytest.raises(AssertionError, match="wallet alice"):
        await faults.assert_reconciled(ledger.redis, share)


async def test_the_relay_reads_every_slots_outbox_in_turn(store: Store) -> None:
    walker = transfers.TransferRelay(store, start=keys.SLOTS - 1)
    size = store.settings.transfers.relay_slots_per_pass
    seen = set()
    for _ in range(keys.SLOTS // size):
        first = walker.next_slot
        await walker.pass_once()
        seen.update((first + i) % keys.SLOTS for i in range(size))
    assert seen == set(range(keys.SLOTS))
    assert walker.next_slot == keys.SLOTS - 1


def test_every_slot_has_an_outbox_in_that_slot() -> None:
    from redis.crc import key_slot

    for slot in (0, 1, 5000, keys.SLOTS - 1):
        assert key_slot(keys.outbox_of_slot(slot).encode()) == slot
    assert key_slot(keys.outbox("alice").encode()) == key_slot(keys.wallet("alice").encode())


INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@given(
    st.builds(
        transfers.Transfer,
        **{name: INT64 for name in ("count", "coins", "at", "share_bps", "held_until")},
    )
)
def test_a_transfer_is_written_as_the_records_already_kept_and_read_back_whole(
    transfer: transfers.Transfer,
) -> None:
    """A record's transfer outlives the worker that wrote it: one encoded from the
    dataclass reads as one encoded from its dict (`asdict`, as before), any text."""
    written = transfer.encoded()
    assert written == orjson.dumps(dataclasses.asdict(transfer)).decode()
    assert transfers.Transfer.decoded(written) == transfer
