"""A store closing (the server's shutdown) with gifts across slots under way: their
steps are the worker's to send, one after the other (ledger/transfers.py), so
`Store.close` waits for them before it closes its connections. Each gift ends
credited, or in its outbox for the relay, and no step goes after the close on a
connection opened again."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest
import redis

from gifting_server.config import Settings
from gifting_server.errors import ErrorCode
from gifting_server.ledger import gifts, keys, streams, transfers
from gifting_server.ledger.store import Store, connect
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import journal_entries
from tests.ledger.test_concurrency import assert_reconciled
from tests.ledger.test_transfer_batch_attack import masters
from tests.ledger.transfers_support import GIFT_LIMITS_OUT_OF_REACH, across_slots_settings

SENDERS = [viewer(f"v{i}") for i in range(8)]
ROUNDS = 16  # passes of the loop the gifts are given before the close: 0 to 15


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return across_slots_settings(redis_url, tmp_path, limits=GIFT_LIMITS_OUT_OF_REACH)


@pytest.fixture
async def ledger(store: Store) -> Store:
    # On the real clock (not transfers_support's open_ledger at T0): the stores closed
    # here debit on their own clocks, and the relay must see those transfers as old.
    for v in SENDERS:
        await fund(store, v.user_id, "coins_100")
    await live_stream(store, "s1")
    return store


def client_ids(nodes: list[redis.Redis]) -> set[tuple[int, int]]:
    """Every connection each node has open, by the node's place in `nodes` and its id."""
    return {(n, int(c["id"])) for n, node in enumerate(nodes) for c in node.client_list()}


async def gifts_then_close(ledger: Store, passes: int, key: str) -> list[object]:
    """Every sender's gift on a store of its own, closed after `passes` passes of the
    loop: close must return only once each gift's steps are over."""
    settings = ledger.settings
    assert settings.redis_url
    store = Store(await connect(settings.redis_url, settings.limits.request_timeout_s), settings)
    await streams.streamer_of(store, "s1")  # known: a gift's first wait is its first step
    gift = settings.gift("finger_heart")
    assert gift is not None
    calls = [
        asyncio.ensure_future(gifts.run_send_gift(store, v, "s1", gift, 1, key)) for v in SENDERS
    ]
    for _ in range(passes):
        await asyncio.sleep(0)
    await store.close()
    assert all(call.done() for call in calls)
    return await asyncio.gather(*calls, return_exceptions=True)


async def test_a_store_closed_with_gifts_across_slots_under_way_waits_for_their_steps(
    ledger: Store,
) -> None:
    acked: list[tuple[str, str]] = []
    nodes = masters(ledger, str(ledger.settings.redis_url))
    try:
        for n in range(ROUNDS):
            before = client_ids(nodes)
            results = await gifts_then_close(ledger, n, f"c{n}")
            # No connection opened for them is left open: none was opened again.
            assert client_ids(nodes) <= before
            for v, result in zip(SENDERS, results, strict=True):
                if isinstance(result, gifts.GiftReceipt):
                    acked.append((v.user_id, f"c{n}"))
                else:
                    # Refused before its debit (the store was closing), or a step cut.
                    assert isinstance(result, transfers.GiftingError), result
                    assert result.code is ErrorCode.SERVICE_UNAVAILABLE
    finally:
        for node in nodes:
            node.close()
    # What a step cut left in an outbox, the relay finishes: no coin is lost.
    slots = sorted({keys.slot_of_tag(f"u:{v.user_id}") for v in SENDERS})
    await transfers.relay_transfers(ledger, slots, ledger.clock() + 1)
    for v in SENDERS:
        assert await ledger.redis.zrange(keys.outbox(v.user_id), 0, -1) == []
    records = [e for e in await journal_entries(ledger.redis) if e["type"] == "gift"]
    credited = Counter((r["user"], r["key"]) for r in records)
    assert set(acked) <= set(credited) and set(credited.values()) <= {1}
    assert acked, "no gift was under way long enough to be answered"
    await assert_reconciled(ledger)
