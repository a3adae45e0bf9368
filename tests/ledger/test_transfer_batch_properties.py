"""Random transfers credited in random batches (ledger/transfer_batch.py) leave the
ledger as the same transfers credited one after another by the one-transfer scripts
(`transfers.finish`, the relay's): the same answers, the stream's history event for
event, the same boards, combos, streaks and wallets, the same journal records, and
every transfer credited once, a key given twice or a transfer left to the relay
included. Only what the order of the streamer's credits may change is compared as
totals: which gift's diamonds take a rounding's remainder (the diamonds come from
the lifetime coins received, so their sum is exact either way)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from gifting_server import events
from gifting_server.auth import Identity
from gifting_server.config import Settings
from gifting_server.errors import GiftingError
from gifting_server.ledger import gifts, keys, payments, streams, transfers
from gifting_server.ledger.clock import DAY_MS
from gifting_server.ledger.journal import records
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import Store, connect
from tests.factories import viewer
from tests.ledger.support import FakeClock, snapshot
from tests.ledger.transfers_support import (
    GIFT_LIMITS_OUT_OF_REACH,
    across_slots_settings,
    credit_together,
    transfer_of,
)

SENDERS = [viewer(f"v{i}", name=f"V|{i}") for i in range(6)]
STREAMS = {"s1": "t1", "s2": "t1", "s3": "t2"}  # t1 streams two at once
GIFTS = ("rose", "finger_heart", "doughnut")
START_MS = 20_000 * DAY_MS - 4_000  # 4 s before a UTC midnight

# sender, stream, gift, count, key (some given twice), a day late, left to the relay
Gift = tuple[int, str, str, int, int, bool, bool]
gift_of = st.tuples(
    st.integers(0, len(SENDERS) - 1),
    st.sampled_from(["s1", "s1", "s1", "s2", "s3"]),  # a busy stream, so batches
    st.sampled_from(GIFTS),
    st.sampled_from([1, 1, 2, 3]),
    st.integers(0, 7),
    st.sampled_from([False, False, True]),
    st.sampled_from([False, False, False, True]),
)
steps = st.sampled_from([0, 1, 1_500, 3_500, DAY_MS])
batch_of = st.tuples(steps, st.lists(gift_of, min_size=6, max_size=30))


async def run(
    store: Store, plan: list[tuple[int, list[Gift]]], batched: bool
) -> tuple[list[Any], dict[str, Any]]:
    await store.redis.flushall()
    clock = FakeClock(START_MS - DAY_MS)
    store.clock = clock
    for stream, streamer in STREAMS.items():
        await streams.start_stream(store, streamer, stream)
    for sender in SENDERS:
        await payments.apply_payment(
            store, sender.user_id, f"e-{sender.user_id}", "payment.succeeded", "coins_500"
        )
    answers: list[Any] = []
    nonces: dict[str, str] = {}
    now = START_MS
    for step, batch in plan:
        now += step
        debits: list[transfers.Debited] = []
        for gift in batch:
            debit = await debit_of(store, clock, now, gift)
            answers.append(debit if debit is None or isinstance(debit, str) else debit.coins_left)
            if isinstance(debit, transfers.Debited) and not gift[6]:
                debits.append(debit)
            if isinstance(debit, transfers.Debited) and debit.transfer is not None:
                nonces[debit.transfer.nonce] = debit.transfer.id
        clock.now = now
        if batched:
            answers += await credit_together(store, debits)
        else:
            answers += [
                await transfers.finish(store, transfer_of(d), d.daily_limit) for d in debits
            ]
    clock.now = now + DAY_MS
    slots = sorted({keys.slot_of_tag(f"u:{s.user_id}") for s in SENDERS})
    while await transfers.relay_transfers(store, slots, now + 1):
        pass
    report = await reconcile(store.redis, store.settings.economy.creator_share_bps)
    assert report.ok, report.format()
    return answers, await ledger_state(store, nonces)


async def debit_of(
    store: Store, clock: FakeClock, now: int, gift: Gift
) -> transfers.Debited | str | None:
    who, stream, gift_id, count, key, late, _ = gift
    sent = store.settings.gift(gift_id)
    assert sent is not None
    sender: Identity = SENDERS[who]
    clock.now = now - DAY_MS if late else now
    try:
        return await transfers.debit(
            store,
            sender,
            stream,
            STREAMS[stream],
            sent,
            count,
            f"k{key}",
            gifts.event_fragment(sender, sent),
        )
    except GiftingError as e:
        return e.code.name


async def ledger_state(store: Store, nonces: dict[str, str]) -> dict[str, Any]:
    """`snapshot` with each debit's random nonce named by its transfer, each journal
    as its records, and the streamer side's per-gift diamonds (records, journal lines,
    held buckets) as their sums: only those may follow the order of the credits."""
    found: dict[str, Any] = {}
    for key, value in (await snapshot(store.redis)).items():
        text = repr(value)
        for nonce, transfer_id in nonces.items():
            key, text = key.replace(nonce, transfer_id), text.replace(nonce, transfer_id)
        kind, content, ttl = value
        if kind == "stream" and key.endswith(":journal"):
            lines = [r for _, f in content for r in records(f)]
            diamonds = sum(int(r.pop("diamonds", 0)) for r in lines)
            platform = sum(int(r.pop("platform", 0)) for r in lines)
            text = repr((sorted(sorted(r.items()) for r in lines), diamonds, platform))
        elif key.startswith("{u:t") and ":credited:" in key:
            found.setdefault("streamer records", 0)
            found["streamer records"] += int(content)
            continue
        elif key.endswith(":held"):
            text = repr(sum(int(v) for _, v in content))
        elif kind == "stream" and key.endswith(":history"):
            # As its events: a batch groups a stream's events after its first into
            # one entry (events.py).
            raws = [e for _, f in content for e in events.history_events(f["e"].encode())]
            text = repr(raws)
        found[key] = (kind, text, ttl)
    return found


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return across_slots_settings(redis_url, tmp_path, limits=GIFT_LIMITS_OUT_OF_REACH)


@pytest.mark.timeout(600)
def test_random_transfers_in_random_batches_leave_what_one_by_one_leaves(
    settings: Settings, redis_url: str
) -> None:
    @hypothesis.settings(max_examples=30, deadline=None)
    @hypothesis.given(plan=st.lists(batch_of, min_size=1, max_size=5))
    def same(plan: list[tuple[int, list[Gift]]]) -> None:
        async def both() -> None:
            store = Store(await connect(redis_url, 5.0), settings)
            try:
                alone = await run(store, plan, False)
                batched = await run(store, plan, True)
            finally:
                await store.close()
            assert batched[0] == alone[0]
            assert batched[1] == alone[1]

        asyncio.run(both())

    same()
