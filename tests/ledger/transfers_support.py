"""What the tests of gifts across slots (ledger/transfers.py, ledger/transfer_batch.py)
share: settings that take the steps, a ledger funded and live, the steps driven one at
a time, and what they left.

A test module takes the fixtures by importing them (and naming them in `__all__`);
one that needs other senders or settings makes its own with `across_slots_settings`
and `open_ledger`."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from gifting_server.auth import Identity
from gifting_server.config import Settings
from gifting_server.ledger import gifts, keys, transfers
from gifting_server.ledger.store import Store
from tests.conftest import make_settings
from tests.factories import fund, live_stream, viewer
from tests.history import history_events
from tests.ledger.support import T0, FakeClock, journal_entries

ALICE = viewer("alice")
# A rate limit no sender of these tests reaches, where the rate limit is not what is
# tested.
GIFT_LIMITS_OUT_OF_REACH = {"gift_burst": 200, "gift_rate_per_s": 200}


def across_slots_settings(redis_url: str, tmp_path: Path, **sections: dict[str, Any]) -> Settings:
    return dataclasses.replace(
        make_settings(redis_url, tmp_path, **sections), gifts_across_slots=True
    )


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return across_slots_settings(redis_url, tmp_path)


async def open_ledger(
    store: Store, senders: Iterable[Identity], streams: Iterable[str] = ("s1",), funds: int = 1
) -> Store:
    """The store on a clock at T0, each sender bought coins_100 `funds` times, each of
    streamer1's `streams` live."""
    store.clock = FakeClock(T0)
    for sender in senders:
        await fund(store, sender.user_id, "coins_100", times=funds)
    for stream in streams:
        await live_stream(store, stream)
    return store


@pytest.fixture
async def ledger(store: Store) -> Store:
    return await open_ledger(store, [ALICE])


def clock_of(store: Store) -> FakeClock:
    assert isinstance(store.clock, FakeClock)
    return store.clock


def gift_of(store: Store, gift_id: str) -> gifts.Gift:
    gift = store.settings.gift(gift_id)
    assert gift is not None
    return gift


async def send(
    store: Store,
    key: str = "k1",
    sender: Identity = ALICE,
    gift_id: str = "finger_heart",
    stream: str = "s1",
) -> gifts.GiftReceipt:
    return await gifts.run_send_gift(store, sender, stream, gift_of(store, gift_id), 1, key)


async def debit_only(
    store: Store,
    key: str = "k1",
    sender: Identity = ALICE,
    gift_id: str = "finger_heart",
    stream: str = "s1",
) -> transfers.Debited:
    """Steps 1 and 2 of a gift: what a worker holds before the credits, and what it
    leaves when it dies right after the debit."""
    gift = gift_of(store, gift_id)
    fragment = gifts.event_fragment(sender, gift)
    return await transfers.debit(store, sender, stream, "streamer1", gift, 1, key, fragment)


def transfer_of(debit: transfers.Debited) -> transfers.Transfer:
    assert debit.transfer is not None
    return debit.transfer


async def credit_together(
    store: Store, debits: list[transfers.Debited]
) -> list[transfers.Credited | BaseException]:
    """The credits of these transfers as one flush of a worker sends them."""
    return await asyncio.gather(
        *(transfers.finish_batched(store, transfer_of(d), d.daily_limit) for d in debits),
        return_exceptions=True,
    )


async def relay(store: Store, senders: Sequence[Identity] = (ALICE,)) -> int:
    """One pass of the relay over the senders' slots: the transfers old enough that
    their workers are taken for gone."""
    slots = sorted({keys.slot_of_tag(f"u:{sender.user_id}") for sender in senders})
    return await transfers.relay_transfers(
        store, slots, store.clock() - store.settings.transfers.relay_after_ms
    )


async def pending(store: Store, senders: Sequence[Identity] = (ALICE,)) -> list[str]:
    """The transfers still in the senders' outboxes."""
    found: list[str] = []
    for sender in senders:
        found += await store.redis.zrange(keys.outbox(sender.user_id), 0, -1)
    return found


async def gift_events(store: Store, stream: str = "s1") -> list[dict[str, Any]]:
    return [e for e in await history_events(store.redis, stream) if e["kind"] == "gift"]


async def gift_event_ids(store: Store, stream: str = "s1") -> list[int]:
    return [event["event_id"] for event in await gift_events(store, stream)]


async def gift_records(store: Store) -> list[dict[str, str]]:
    """The journal's gift lines."""
    return [e for e in await journal_entries(store.redis) if e["type"] == "gift"]
