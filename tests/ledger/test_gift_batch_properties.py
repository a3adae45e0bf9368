"""Random gifts in random batches: send_gifts (ledger/gift_batch.py) must leave the
ledger exactly as the same gifts sent one by one through send_gift, and answer each
gift as send_gift did: wallets, boards, combos, streaks, the history's events byte
for byte, the idempotency records and the journal's records (a call's gifts to one
streamer are one entry there, a gift a line: compared record by record)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import hypothesis
import pytest
from hypothesis import strategies as st

from gifting_server import events
from gifting_server.config import Settings
from gifting_server.ledger import gift_batch, gifts, payments, streams, wallet
from gifting_server.ledger.clock import DAY_MS
from gifting_server.ledger.journal import records
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import Store, connect
from tests.conftest import make_settings
from tests.factories import viewer
from tests.ledger.support import snapshot
from tests.topology import single_only

SENDERS = ("v1", "v2", "v3", "t2")  # t2 streams s2, and gifts s1 too
# Names whose event fragment holds "|", quotes and unicode: the combo field stores the
# fragment after its "<combo>|<tap>|", and a streak's end cuts it back out.
NAMES = {"v1": "V|1", "v2": 'V"2 ü 🎁', "v3": "v3", "t2": "T2|"}
STREAMS = {"s1": "t1", "s2": "t2"}
GIFTS = ("rose", "gg", "finger_heart", "doughnut")
SUCCEEDED = payments.PAYMENT_KINDS[0]
START_MS = 20_000 * DAY_MS - 4_000  # 4 s before a UTC midnight

Gift = tuple[str, str, str, int, int, bool]  # sender, stream, gift, count, key, a day late
gift_of = st.tuples(
    st.sampled_from(SENDERS),
    st.sampled_from(sorted(STREAMS)),
    st.sampled_from(GIFTS),
    st.sampled_from([1, 1, 2, 5, 99]),
    st.integers(0, 9),  # the idempotency key: some given twice
    st.sampled_from([False, False, True]),  # a day late: one gift in three
)
# A batch: the time it is sent, after the one before (past the combo window or within
# it, across the midnight), and its gifts.
steps = st.sampled_from([0, 1, 1_500, 3_500, 86_400_000])
batch_of = st.tuples(steps, st.lists(gift_of, max_size=8))


def call_of(settings: Settings, now: int, gift: Gift) -> gifts.GiftCall:
    """The gift's send_gift call, at its batch's time or a day behind it (a worker's
    late gift, stamped on the day before: a stream's gifts of one day share one clock
    in a call, so each gift of a batch has its batch's or that one)."""
    who, stream, gift_id, count, key, late = gift
    sent = settings.gift(gift_id)
    assert sent is not None
    at = now - DAY_MS if late else now
    sender = viewer(who, name=NAMES[who])
    return gifts.gift_call(settings, sender, stream, STREAMS[stream], sent, count, f"k{key}", at)


async def ledger_state(store: Store) -> dict[str, Any]:
    """`snapshot`, with each journal as its records (entry ids are Redis's time) and
    each history as its events (a batched call groups a stream's events after its
    first into one entry: events.py)."""
    state = await snapshot(store.redis)
    for key, (kind, content, ttl) in list(state.items()):
        if kind == "stream" and key.endswith(":journal"):
            state[key] = (kind, [r for _, f in content for r in records(f)], ttl)
        elif kind == "stream" and key.endswith(":history"):
            raws = [e for _, f in content for e in events.history_events(f["e"].encode())]
            state[key] = (kind, raws, ttl)
    return state


async def run(
    store: Store, plan: list[tuple[int, list[Gift]]], batched: bool, wallets: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    await store.redis.flushall()
    for stream, streamer in STREAMS.items():
        await streams.start_stream(store, streamer, stream)
    for user in SENDERS:
        await payments.apply_payment(store, user, f"e-{user}", SUCCEEDED, "coins_500")
        if user in wallets:
            await wallet.set_daily_limit(store, user, wallets[user])
    replies: list[Any] = []
    now = START_MS
    for step, batch in plan:
        now += step
        calls = [call_of(store.settings, now, gift) for gift in batch]
        if not calls:
            continue
        if batched:
            config = (*(calls[0].args[i] for i in gift_batch.CONFIG_ARGS), 1)
            queued = [(c.keys, c.args, None) for c in calls]
            script_keys, args = gift_batch.batch_call(config, queued)  # type: ignore[arg-type]
            flat = await store.scripts.run("send_gifts", script_keys, args)
            replies += gift_batch.split_replies(flat)
        else:
            for c in calls:
                replies.append(await store.scripts.run("send_gift", c.keys, c.args))
    report = await reconcile(store.redis, store.settings.economy.creator_share_bps)
    assert report.ok, report.format()
    return replies, await ledger_state(store)


@single_only("send_gifts is the single Redis's call: a cluster takes the steps across slots")
@pytest.mark.timeout(300)
def test_random_gifts_in_random_batches_leave_what_one_by_one_leaves(
    redis_url: str, tmp_path: Path
) -> None:
    settings = make_settings(redis_url, tmp_path, limits={"gift_burst": 6, "gift_rate_per_s": 2})

    @hypothesis.settings(max_examples=40, deadline=None)
    @hypothesis.given(
        plan=st.lists(batch_of, min_size=1, max_size=6),
        limits=st.dictionaries(st.sampled_from(SENDERS), st.sampled_from([0, 3, 50])),
    )
    def same(plan: list[tuple[int, list[Gift]]], limits: dict[str, int]) -> None:
        async def both() -> None:
            store = Store(await connect(redis_url, 5.0), settings, clock=lambda: START_MS)
            try:
                alone = await run(store, plan, False, limits)
                batched = await run(store, plan, True, limits)
            finally:
                await store.close()
            assert batched[0] == alone[0]
            assert batched[1] == alone[1]

        asyncio.run(both())

    same()
