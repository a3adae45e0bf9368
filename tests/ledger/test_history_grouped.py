"""A batched call's events to one stream after its first are one history entry
(include "event" emitEvent, include "gift" appendGrouped; events.py): the first alone,
so that a history ahead of its meta still refuses with nothing written; the rest as
one entry whose id is its last event's, trimmed by event id. Every reader of the
history (the replay after `since`, a gift's message as speech, an alerts replay, the
peak viewers) finds each event in it, whichever event of the entry it asks for."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from redis.asyncio import Redis

from gifting_server import events
from gifting_server.api.speech import _gift_with_message
from gifting_server.auth import Identity, Role
from gifting_server.config import History
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.hub.redis_history import RedisHistory
from gifting_server.ledger import alerts, gifts, keys
from gifting_server.ledger.gifts import Note
from gifting_server.ledger.store import Store
from tests.factories import fund, viewer
from tests.history import history_events, history_ids
from tests.ledger.test_concurrency import assert_reconciled
from tests.ledger.test_gift_batch import Batch, batches, ledger
from tests.ledger.transfers_support import gift_of

__all__ = ["ledger"]  # the fixture, shared with test_gift_batch

STREAMER = Identity("streamer1", "Streamer One", Role.STREAMER)


async def entries(store: Store, stream_id: str = "s1") -> list[tuple[int, list[int]]]:
    """Each history entry: (its id's number, the ids of the events it holds)."""
    rows = await store.redis.xrange(keys.stream_history(stream_id))
    return [
        (
            int(entry_id.split("-")[0]),
            [events.event_id_of(raw) for raw in events.history_events(fields["e"].encode())],
        )
        for entry_id, fields in rows
    ]


async def send_batch(store: Store, count: int, note: Note | None = None) -> list[int]:
    """`count` roses to s1 from as many new senders in one send_gifts call, the last
    with `note` as its message; their event ids."""
    seq = int(await store.redis.hget(keys.stream("s1"), "seq"))
    rose = gift_of(store, "rose")
    b = Batch(store)
    for i in range(count):
        who = viewer(f"g{seq + i}")
        await fund(store, who.user_id, "coins_100")
        with_note = note if i == count - 1 else None
        b.calls.append(
            gifts.run_send_gift(store, who, "s1", rose, 1, f"k{seq + i}", note=with_note)
        )
        b.expected.append((seq + 1 + i, 99, 1, False))
    calls, carried = batches()
    await b.check()
    assert batches() == (calls + 1, carried + count)  # one send_gifts call
    return list(range(seq + 1, seq + 1 + count))


async def test_a_calls_events_to_a_stream_are_its_first_alone_then_one_entry(
    ledger: Store,
) -> None:
    before = await entries(ledger)
    ids = await send_batch(ledger, 12)
    after = await entries(ledger)
    assert after[: len(before)] == before
    assert after[len(before) :] == [(ids[0], [ids[0]]), (ids[-1], ids[1:])]
    assert await history_ids(ledger.redis, "s1") == list(range(1, ids[-1] + 1))
    await assert_reconciled(ledger)


async def test_a_call_of_one_gift_to_a_stream_is_one_entry_as_before(ledger: Store) -> None:
    """Two streams in one call, one gift each: no grouped entry is written."""
    await fund(ledger, "g0", "coins_100")
    seq = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    b = Batch(ledger)
    b.add(viewer("g0"), "rose", 1, "one", (seq + 1, 99, 1, False))
    b.add(viewer("alice"), "rose", 1, "two", (seq + 2, 998, 2, False))
    await b.check()
    assert (await entries(ledger))[-2:] == [(seq + 1, [seq + 1]), (seq + 2, [seq + 2])]


@pytest.fixture
async def history(ledger: Store) -> Any:
    """The hub's history reader over a client answering bytes, as the app makes it."""
    client = Redis.from_url(str(ledger.settings.redis_url))
    yield RedisHistory(client)
    await client.aclose()


async def test_a_replay_from_any_event_of_a_grouped_entry_gives_exactly_the_rest(
    ledger: Store, history: RedisHistory
) -> None:
    ids = await send_batch(ledger, 10)
    last = ids[-1]
    for since in range(ids[0] - 2, last + 1):
        replay = await history.replay("s1", since)
        assert replay.recovered, since
        assert [events.event_id_of(raw) for raw in replay.events] == list(
            range(since + 1, last + 1)
        ), since
        assert replay.last_event_id == last


async def test_a_replay_from_before_a_grouped_entry_whose_start_was_trimmed_is_not_recovered(
    ledger: Store, history: RedisHistory
) -> None:
    """The first event alone trimmed away by hand: the grouped entry starts after the
    gap, which the replay must not hide."""
    ids = await send_batch(ledger, 6)
    await ledger.redis.xtrim(keys.stream_history("s1"), minid=f"{ids[0] + 1}-0", approximate=False)
    assert (await history.replay("s1", ids[0] - 1)).recovered is False
    assert (await history.replay("s1", ids[0])).recovered is True


async def test_a_gifts_message_in_a_grouped_entry_is_found_by_its_event_id(
    ledger: Store,
) -> None:
    note = Note(sent="hello there", shown="hello there")
    ids = await send_batch(ledger, 5, note)
    found = await _gift_with_message(ledger, "s1", ids[-1])
    assert (found["event_id"], found["message"]) == (ids[-1], "hello there")
    for event_id in ids[:-1]:  # the entry's other gifts carry no message
        with pytest.raises(GiftingError) as refused:
            await _gift_with_message(ledger, "s1", event_id)
        assert refused.value.code is ErrorCode.UNKNOWN_EVENT
    with pytest.raises(GiftingError):
        await _gift_with_message(ledger, "s1", ids[-1] + 1)


async def test_an_alerts_replay_shows_any_gift_of_a_grouped_entry(ledger: Store) -> None:
    ids = await send_batch(ledger, 7)
    for event_id in (ids[1], ids[3], ids[-1]):
        replay_id = await alerts.control_alerts(ledger, STREAMER, "s1", "replay", event_id=event_id)
        [shown] = await history_events(ledger.redis, "s1", since=replay_id - 1)
        assert shown["kind"] == "alerts"
        assert shown["event"]["event_id"] == event_id
        assert shown["event"]["sender"]["id"] == f"g{event_id - 1}"
    # An event that is no gift (the last replay's own), and an id past the history.
    for event_id in (replay_id, replay_id + 1):
        with pytest.raises(GiftingError) as refused:
            await alerts.control_alerts(ledger, STREAMER, "s1", "replay", event_id=event_id)
        assert refused.value.code is ErrorCode.UNKNOWN_EVENT


async def test_a_grouped_history_is_trimmed_by_event_id_to_its_cap(ledger: Store) -> None:
    """The cap counts events: an entry of many events does not keep many times it."""
    cap = 50
    ledger.settings = dataclasses.replace(ledger.settings, history=History(max_events=cap))
    for _ in range(4):
        await send_batch(ledger, 40)
    ids = await history_ids(ledger.redis, "s1")
    assert ids == list(range(ids[0], ids[-1] + 1))  # no gap
    # Exact: from the cap's oldest event on, and the rest of the entry that holds it.
    assert cap <= len(ids) < cap + 40


async def test_a_call_ended_by_a_planted_key_leaves_the_history_with_every_event_of_its_seq(
    ledger: Store,
) -> None:
    """A key of another type written at the call's end, before its messages (here the
    platform's account, summed and added once a call) ends the call after the stream's
    meta is written: the history still holds every event the meta's seq counts, as
    when each event was its own XADD, so a replay finds no gap that is not there."""
    await ledger.redis.set(keys.platform_account("streamer1"), "planted")
    seq = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    b = Batch(ledger)
    for i in range(4):
        who = viewer(f"p{i}")
        await fund(ledger, who.user_id, "coins_100")
        b.add(who, "rose", 1, f"p{i}", ErrorCode.STORAGE_CORRUPT)
    await b.check()
    written = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    assert written == seq + 4  # the gifts' own writes, as send_gift's header says
    assert await history_ids(ledger.redis, "s1") == list(range(1, written + 1))


async def test_a_replay_across_chunks_of_lone_and_grouped_entries_gives_every_event_once(
    ledger: Store, history: RedisHistory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunks of two entries (REPLAY_CHUNK), so that a chunk ends on a lone entry, on a
    grouped one and inside a call's events, from every `since`."""
    monkeypatch.setattr("gifting_server.hub.redis_history.REPLAY_CHUNK", 2)
    await send_batch(ledger, 4)
    await gifts.run_send_gift(ledger, viewer("alice"), "s1", gift_of(ledger, "rose"), 1, "lone")
    await send_batch(ledger, 3)
    await send_batch(ledger, 2)
    last = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    assert await history_ids(ledger.redis, "s1") == list(range(1, last + 1))
    for since in range(0, last + 1):
        replay = await history.replay("s1", since)
        assert replay.recovered, since
        got = [events.event_id_of(raw) for raw in replay.events]
        assert got == list(range(since + 1, last + 1)), since
        assert replay.last_event_id == last, since


async def test_a_streams_delivery_log_still_takes_each_event_of_a_grouped_call_alone(
    ledger: Store,
) -> None:
    """The webhook delivery log (webhooks/deliver.py reads an entry as one event) gets
    an entry an event, its id the event's, the same events as the history."""
    log = keys.webhook_log("s1")
    await ledger.redis.hset(keys.stream("s1"), "webhook_log", log)
    ids = await send_batch(ledger, 6)
    rows = await ledger.redis.xrange(log)
    assert [int(entry_id.split("-")[0]) for entry_id, _ in rows] == ids
    stored = [events.parse(fields["e"]) for _, fields in rows]
    assert stored == await history_events(ledger.redis, "s1", since=ids[0] - 1)
