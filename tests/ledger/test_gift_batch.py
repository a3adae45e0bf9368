"""The gifts of one pass of the loop go to a single Redis as one send_gifts call
(ledger/gift_batch.py): each still gets exactly its own answer, in the order the
gifts came, refused ones writing nothing, and the ledger adds up."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gifting_server.auth import Identity, Role
from gifting_server.config import History
from gifting_server.errors import ErrorCode, GiftingError, ScriptCode
from gifting_server.ledger import battles, gift_batch, gifts, journal, keys, streams, wallet
from gifting_server.ledger.clock import DAY_MS, day_number, wall_clock_ms
from gifting_server.ledger.gift_batch import MAX_BATCH
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, viewer
from tests.history import history_ids
from tests.ledger.conftest import one_script_only
from tests.ledger.support import T0, FakeClock, journal_entries, snapshot
from tests.ledger.test_concurrency import assert_reconciled
from tests.topology import Subscription

Expected = tuple[int, int, int, bool] | ErrorCode  # (event id, coins left, combo, replayed)


def batches() -> tuple[float, float]:
    """(script calls that carried gifts, gifts they carried) so far."""
    calls = REGISTRY.get_sample_value("gifting_gift_batches_total") or 0.0
    carried = REGISTRY.get_sample_value("gifting_gifts_batched_total") or 0.0
    return calls, carried


class Batch:
    """Gifts sent at once, each with the answer it must get."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.calls: list[Awaitable[gifts.GiftReceipt]] = []
        self.expected: list[Expected] = []

    def add(
        self,
        who: Identity,
        gift_id: str,
        count: int,
        key: str,
        expected: Expected,
        stream: str = "s1",
    ) -> None:
        gift = self.store.settings.gift(gift_id)
        assert gift is not None
        self.calls.append(gifts.run_send_gift(self.store, who, stream, gift, count, key))
        self.expected.append(expected)

    async def check(self) -> None:
        answers = await asyncio.gather(*self.calls, return_exceptions=True)
        got: list[Any] = []
        for answer in answers:
            if isinstance(answer, GiftingError):
                got.append(answer.code)
            elif isinstance(answer, gifts.GiftReceipt):
                got.append((answer.event_id, answer.coins, answer.combo, answer.replayed))
            else:
                raise answer  # type: ignore[misc]
        assert got == self.expected


async def run_send_gifts(store: Store, script_keys: list[str], args: list[Any]) -> list[Any]:
    """send_gifts' replies, one a gift (the script lays them end to end)."""
    return gift_batch.split_replies(await store.scripts.run("send_gifts", script_keys, args))


@pytest.fixture
async def ledger(store: Store) -> Store:
    why = "a batch is the single Redis's call: test_concurrency races the steps across slots"
    one_script_only(store, why)
    store.clock = FakeClock(T0)
    await fund(store, "alice", "coins_1000")
    await fund(store, "carol", "coins_100")
    await fund(store, "dave", "coins_1000")
    await fund(store, "erin", "coins_100")
    await live_stream(store)
    await live_stream(store, "s2")
    await streams.end_stream(store, "streamer1", "s2")
    # The owner of a stream is looked up once (streams.streamer_of): a gift that waits
    # for that lookup reaches the ledger in a later pass of the loop than the others.
    await streams.streamer_of(store, "s2")
    rose = store.settings.gift("rose")
    assert rose is not None
    # Event 1 was the stream's start; event 2 this gift (s1's history: stream_started, gift).
    await gifts.run_send_gift(store, viewer("alice"), "s1", rose, 1, "before")
    return store


async def test_each_gift_of_a_batch_gets_its_own_answer_in_order(ledger: Store) -> None:
    before_history = len(await history_ids(ledger.redis, "s1"))
    seq = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    alice, carol, dave = viewer("alice"), viewer("carol"), viewer("dave")
    b = Batch(ledger)
    # alice: 1,000 coins less the rose before; her combo of roses goes on.
    b.add(alice, "rose", 1, "a1", (seq + 1, 998, 2, False))
    b.add(alice, "rose", 1, "before", (seq, 999, 1, True))  # replay of the earlier gift
    b.add(alice, "rose", 2, "before", ErrorCode.IDEMPOTENCY_CONFLICT)
    b.add(alice, "rose", 1, "a1", (seq + 1, 998, 2, True))  # the same key twice in a batch
    b.add(alice, "rose", 3, "a1", ErrorCode.IDEMPOTENCY_CONFLICT)
    b.add(viewer("bob"), "rose", 1, "b1", ErrorCode.INSUFFICIENT_FUNDS)
    b.add(viewer("streamer1"), "rose", 1, "self", ErrorCode.SELF_GIFT)
    b.add(alice, "rose", 1, "s2", ErrorCode.STREAM_NOT_LIVE, stream="s2")
    b.add(viewer("erin", adult=False), "rose", 1, "e1", ErrorCode.AGE_VERIFICATION_REQUIRED)
    # carol: 100 coins; the second gift sees what the first spent.
    b.add(carol, "finger_heart", 15, "c1", (seq + 2, 25, 15, False))
    b.add(carol, "finger_heart", 10, "c2", ErrorCode.INSUFFICIENT_FUNDS)
    b.add(carol, "rose", 25, "c3", (seq + 3, 0, 25, False))
    b.add(alice, "rose", 1, "a2", (seq + 4, 997, 3, False))
    # dave: a burst of the rate limit's size goes through, the next gift is refused.
    burst = ledger.settings.limits.gift_burst
    for i in range(burst):
        b.add(dave, "rose", 1, f"d{i}", (seq + 5 + i, 999 - i, i + 1, False))
    b.add(dave, "rose", 1, "d-over", ErrorCode.RATE_LIMITED)
    assert len(b.calls) <= MAX_BATCH  # one call: every gift of it sees those before it

    calls, carried = batches()
    await b.check()
    assert batches() == (calls + 1, carried + len(b.calls))

    accepted = 4 + burst
    assert len(await history_ids(ledger.redis, "s1")) == before_history + accepted
    assert int(await ledger.redis.hget(keys.stream("s1"), "seq")) == seq + accepted
    entries = await journal_entries(ledger.redis)
    gift_keys = [e["key"] for e in entries if e["type"] == "gift"]
    assert gift_keys == ["before", "a1", "c1", "c3", "a2", *(f"d{i}" for i in range(burst))]
    for user, coins in [("alice", 997), ("bob", 0), ("carol", 0), ("dave", 1000 - burst)]:
        assert (await wallet.read_wallet(ledger, user))["coins"] == coins
    await assert_reconciled(ledger)


async def test_a_flush_past_the_cap_goes_as_several_calls(ledger: Store) -> None:
    """More gifts than one call carries: the later calls see what the earlier wrote."""
    senders = [viewer(f"v{i}") for i in range(2 * MAX_BATCH + 1)]
    for who in senders:
        await fund(ledger, who.user_id, "coins_100")
    seq = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    b = Batch(ledger)
    for i, who in enumerate(senders):
        b.add(who, "rose", 1, "k", (seq + 1 + i, 99, 1, False))
    calls, carried = batches()
    await b.check()
    assert batches() == (calls + 3, carried + len(senders))
    await assert_reconciled(ledger)


async def test_a_gift_alone_in_its_pass_is_one_send_gift(ledger: Store) -> None:
    seq = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    calls, carried = batches()
    b = Batch(ledger)
    b.add(viewer("alice"), "rose", 1, "alone", (seq + 1, 998, 2, False))
    await b.check()
    assert batches() == (calls + 1, carried + 1)


async def test_a_configuration_out_of_range_refuses_every_gift_and_writes_nothing(
    ledger: Store,
) -> None:
    rose = ledger.settings.gift("rose")
    assert rose is not None
    calls = [
        gifts.gift_call(ledger.settings, viewer(who), "s1", "streamer1", rose, 1, "x", T0)
        for who in ("alice", "carol")
    ]
    queued: list[Any] = [(c.keys, c.args, None) for c in calls]
    config = (*(calls[0].args[i] for i in gift_batch.CONFIG_ARGS), 1)  # one message a call
    bad = (config[0], 10_001, *config[2:])  # a creator share past 100%
    before = await snapshot(ledger.redis)
    # ... a history cap Redis would refuse, a one-message flag neither 1 nor 0
    for cfg in (bad, (*config[:-2], "1e3", 1), (*config[:-1], 2)):
        script_keys, args = gift_batch.batch_call(cfg, queued)
        replies = await run_send_gifts(ledger, script_keys, args)
        assert replies == [[ScriptCode.INVALID_ARGUMENT]] * 2
    # A gift's own number out of range refuses that gift alone.
    script_keys, args = gift_batch.batch_call(config, queued)
    alice, carol = len(config) + 1 + 5, len(config) + 1 + 5 + 10  # after one stream's 5
    assert args[alice : alice + 2] == [1, "alice"] and args[carol + 1] == "carol"
    args[alice + 5] = "1e3"  # alice's coins
    args[carol] = "2"  # carol's stream: there is one
    assert await run_send_gifts(ledger, script_keys, args) == [[ScriptCode.INVALID_ARGUMENT]] * 2
    assert await snapshot(ledger.redis) == before
    # The stream's clock (read once for its gifts of the call) out of range refuses them all.
    clock = len(config) + 1 + 3
    assert args[clock : clock + 2] == calls[0].args[7:8] + calls[0].args[20:21]
    for now, held in (("soon", 0), (T0, "-1")):
        clocked = [*args[:clock], now, held, *args[clock + 2 :]]
        clocked[carol] = "1"
        assert (
            await run_send_gifts(ledger, script_keys, clocked)
            == [[ScriptCode.INVALID_ARGUMENT]] * 2
        )
    assert await snapshot(ledger.redis) == before
    args[carol] = "1"
    replies = await run_send_gifts(ledger, script_keys, args)
    assert replies[0] == [ScriptCode.INVALID_ARGUMENT] and replies[1][0] == 0
    assert await snapshot(ledger.redis) != before
    await assert_reconciled(ledger)


async def test_a_number_a_call_reads_once_answers_each_of_its_gifts_alike(ledger: Store) -> None:
    """A call parses each count and price text once (docs/performance.md): a price that
    is no number refuses every gift that gives it, before and after a good one."""
    rose = ledger.settings.gift("rose")
    assert rose is not None
    calls = [
        gifts.gift_call(ledger.settings, viewer(who), "s1", "streamer1", rose, 1, f"n-{who}", T0)
        for who in ("alice", "carol", "dave")
    ]
    config = (*(calls[0].args[i] for i in gift_batch.CONFIG_ARGS), 1)
    script_keys, args = gift_batch.batch_call(config, [(c.keys, c.args, None) for c in calls])
    first = len(config) + 1 + 5  # after one stream's 5
    for gift in (0, 2):  # alice's and dave's coins
        args[first + 10 * gift + 5] = "1e0"
    before = await snapshot(ledger.redis)
    replies = await run_send_gifts(ledger, script_keys, args)
    assert replies[0] == replies[2] == [ScriptCode.INVALID_ARGUMENT]
    assert replies[1][0] == 0 and replies[1][4] == 0  # carol's, not replayed
    assert await snapshot(ledger.redis) != before
    await assert_reconciled(ledger)


async def test_a_failed_call_fails_every_gift_of_its_batch(ledger: Store) -> None:
    """Redis gone: each caller gets service_unavailable, as for its own call."""
    await ledger.scripts.close()
    b = Batch(ledger)
    port_closed = ledger.scripts.pipeline
    port_closed.options = {**port_closed.options, "port": 1}  # nothing listens there
    b.add(viewer("alice"), "rose", 1, "f1", ErrorCode.SERVICE_UNAVAILABLE)
    b.add(viewer("carol"), "rose", 1, "f2", ErrorCode.SERVICE_UNAVAILABLE)
    await b.check()


async def test_a_history_ahead_of_its_meta_refuses_its_gifts_alone(ledger: Store) -> None:
    """The meta of s3 restored behind its history: its gifts in the batch are refused
    with nothing of them written, the gifts to s1 before and after them are whole."""
    await live_stream(ledger, "s3")
    rose = ledger.settings.gift("rose")
    assert rose is not None
    await gifts.run_send_gift(ledger, viewer("carol"), "s3", rose, 1, "pre3")
    await ledger.redis.hset(keys.stream("s3"), "seq", "0")
    s3_before = await ledger.redis.xrange(keys.stream_history("s3"))
    seq = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    alice, carol = viewer("alice"), viewer("carol")
    b = Batch(ledger)
    b.add(alice, "rose", 1, "x1", (seq + 1, 998, 2, False))
    b.add(carol, "rose", 1, "x2", ErrorCode.STORAGE_CORRUPT, stream="s3")
    b.add(carol, "rose", 2, "x3", (seq + 2, 97, 2, False))
    b.add(alice, "rose", 1, "x4", ErrorCode.STORAGE_CORRUPT, stream="s3")
    await b.check()
    assert await ledger.redis.xrange(keys.stream_history("s3")) == s3_before
    assert await ledger.redis.hget(keys.stream("s3"), "seq") == "0"
    assert int(await ledger.redis.hget(keys.stream("s1"), "seq")) == seq + 2
    assert await ledger.redis.get(keys.idempotency("carol", "x2")) is None
    gift_keys = [e["key"] for e in await journal_entries(ledger.redis) if e["type"] == "gift"]
    assert gift_keys == ["before", "pre3", "x1", "x3"]
    # The s1 gifts' credits went in whole: the streamer's diamonds and the platform's
    # share add up (reconcile), and so does s1's coin total.
    await assert_reconciled(ledger)


async def test_a_stream_whose_gifts_of_a_call_are_all_refused_publishes_nothing(
    ledger: Store,
) -> None:
    """A stream's events of a call go as one message at its end: a stream whose every
    gift of the call was refused by a history ahead of its meta has no event, and
    its channel gets no message (not an empty one, which a subscriber would read as
    one event that is no JSON)."""
    await live_stream(ledger, "s3")
    rose = ledger.settings.gift("rose")
    assert rose is not None
    await gifts.run_send_gift(ledger, viewer("carol"), "s3", rose, 1, "pre3")
    await ledger.redis.hset(keys.stream("s3"), "seq", "0")
    channel = keys.stream_channel("s3")
    subscription = await Subscription.open(ledger.redis, channel)
    try:
        seq = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
        b = Batch(ledger)
        b.add(viewer("carol"), "rose", 1, "x2", ErrorCode.STORAGE_CORRUPT, stream="s3")
        b.add(viewer("alice"), "rose", 1, "x1", (seq + 1, 998, 2, False))
        await b.check()
        await ledger.redis.publish(channel, "mark")  # after whatever the call published
        message = await subscription.next(timeout_s=5.0)
        assert message is not None and message["data"] == "mark", message
    finally:
        await subscription.aclose()


async def test_a_planted_key_ends_the_call_with_the_gifts_before_it_whole(ledger: Store) -> None:
    """A key of another type (only someone with Redis access can plant one) fails the
    call after its gifts' first writes: here a journal, the call's last write (one entry
    a streamer, at its end). The gifts to other streamers are written whole, stream
    meta, streamer credit and journal entry included, and answer their retry."""
    await live_stream(ledger, "s4", "streamer2")
    await streams.streamer_of(ledger, "s4")
    await ledger.redis.set(keys.journal("streamer2"), "planted")
    seq = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    received = (await ledger.redis.hget(keys.wallet("streamer1"), "received")) or "0"
    b = Batch(ledger)
    b.add(viewer("alice"), "rose", 1, "y1", ErrorCode.STORAGE_CORRUPT)
    b.add(viewer("carol"), "rose", 1, "y2", ErrorCode.STORAGE_CORRUPT, stream="s4")
    await b.check()
    assert int(await ledger.redis.hget(keys.stream("s1"), "seq")) == seq + 1
    assert int(await ledger.redis.hget(keys.wallet("streamer1"), "received")) == int(received) + 1
    one = await ledger.redis.xrange(keys.journal("streamer1"))
    assert [g["key"] for _, e in one for g in journal.records(e)] == ["before", "y1"]
    retry = Batch(ledger)
    retry.add(viewer("alice"), "rose", 1, "y1", (seq + 1, 998, 2, True))
    await retry.check()


async def test_a_calls_gifts_to_one_streamer_are_one_journal_entry_with_each_gift_whole(
    ledger: Store,
) -> None:
    """One XADD a journal a call (docs/performance.md): each gift keeps its own record,
    in the call's order, with every field send_gift journals, its battle included; a
    refused gift has none; the boards, the battle's points and the audit add up."""
    await live_stream(ledger, "s6", "streamer2")
    await streams.streamer_of(ledger, "s6")
    one = Identity("streamer1", "Streamer One", Role.STREAMER)
    two = Identity("streamer2", "Streamer Two", Role.STREAMER)
    # The invite's expiry is the store's clock, its accept Redis's: the clock goes to now.
    assert isinstance(ledger.clock, FakeClock)
    ledger.clock.now = wall_clock_ms()
    duration = ledger.settings.battles.min_duration_s
    invited, _ = await battles.invite(ledger, one, "s1", "s6", duration, "inv-journal")
    live = await battles.accept(ledger, two, invited["battle_id"])
    assert live["status"] == "live"
    before = {
        s: len(await ledger.redis.xrange(keys.journal(s))) for s in ("streamer1", "streamer2")
    }
    seq = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    seq6 = int(await ledger.redis.hget(keys.stream("s6"), "seq"))
    erin = viewer("erin")
    b = Batch(ledger)
    b.add(viewer("carol"), "finger_heart", 2, "j1", (seq + 1, 90, 2, False))
    b.add(viewer("dave"), "rose", 1, "j2", (seq6 + 1, 999, 1, False), stream="s6")
    b.add(viewer("bob"), "rose", 1, "j3", ErrorCode.INSUFFICIENT_FUNDS)
    b.add(erin, "rose", 1, "j4", (seq + 2, 99, 1, False))
    b.add(erin, "rose", 2, "j5", (seq + 3, 97, 3, False))
    calls, _ = batches()
    await b.check()
    assert batches()[0] == calls + 1

    one_entry = (await ledger.redis.xrange(keys.journal("streamer1")))[before["streamer1"] :]
    assert len(one_entry) == 1
    gifts_of_one = journal.records(one_entry[0][1])
    assert [(g["key"], g["user"], g["coins"], g["event_id"]) for g in gifts_of_one] == [
        ("j1", "carol", "10", str(seq + 1)),
        ("j4", "erin", "1", str(seq + 2)),
        ("j5", "erin", "2", str(seq + 3)),
    ]
    for g in gifts_of_one:
        assert g["type"] == "gift" and g["to"] == "streamer1" and g["stream"] == "s1"
        assert g["battle"] == live["battle_id"] and g["battle_at"].isdigit()
        assert set(g) >= {"gift", "count", "diamonds", "platform", "share", "at"}
    two_entry = (await ledger.redis.xrange(keys.journal("streamer2")))[before["streamer2"] :]
    assert [g["key"] for e in two_entry for g in journal.records(e[1])] == ["j2"]
    # The battle's points and top gifters, and the boards, each gift counted once.
    assert await ledger.redis.hget(keys.stream("s1"), "battle_points") == "13"
    assert await ledger.redis.zscore(keys.battle_top("s1"), "erin") == 3
    assert await ledger.redis.zscore(keys.stream_leaderboard("s1"), "carol") == 10
    await assert_reconciled(ledger)


async def test_a_calls_gifts_on_both_sides_of_midnight_each_keep_their_own_day(
    ledger: Store,
) -> None:
    """A stream's clock is read once for its gifts of a call (send_gifts): two gifts of
    one pass on either side of midnight must still be two days, on the day boards and
    in the journal, and the ledger must add up."""
    clock = ledger.clock
    assert isinstance(clock, FakeClock)
    rose = ledger.settings.gift("rose")
    assert rose is not None
    before = clock()
    to_midnight = DAY_MS - before % DAY_MS

    async def after_midnight() -> gifts.GiftReceipt:
        clock.advance(to_midnight)  # in the same pass of the loop as the gift before it
        return await gifts.run_send_gift(ledger, viewer("dave"), "s1", rose, 1, "late")

    calls, carried = batches()
    early, late = await asyncio.gather(
        gifts.run_send_gift(ledger, viewer("alice"), "s1", rose, 1, "early"), after_midnight()
    )
    assert batches() == (calls + 1, carried + 2)  # one call carried both
    assert not early.replayed and not late.replayed
    days = [day_number(before), day_number(before + to_midnight)]
    assert days[1] == days[0] + 1
    boards = [keys.channel_leaderboard("streamer1", "day", day) for day in days]
    assert await ledger.redis.zscore(boards[0], "alice") == 2  # with the rose of the fixture
    assert await ledger.redis.zscore(boards[0], "dave") is None
    assert await ledger.redis.zscore(boards[1], "dave") == 1
    assert await ledger.redis.zscore(boards[1], "alice") is None
    at = {e["key"]: int(e["at"]) for e in await journal_entries(ledger.redis) if "key" in e}
    assert (at["early"], at["late"]) == (before, before + to_midnight)
    await assert_reconciled(ledger)


async def test_a_calls_gifts_trim_their_streams_history_to_its_cap(ledger: Store) -> None:
    """send_gifts appends a call's events untrimmed and trims each stream's history once
    at the call's end (one XTRIM, docs/performance.md): two full calls leave the history
    within the cap, as many lone gifts would (`MAXLEN ~` trims whole nodes of
    stream-node-max-entries entries, so the cap is kept to within one node)."""
    cap = 10
    ledger.settings = dataclasses.replace(ledger.settings, history=History(max_events=cap))
    senders = [viewer(f"h{i}") for i in range(2 * MAX_BATCH)]
    for who in senders:
        await fund(ledger, who.user_id, "coins_100")
    seq = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    b = Batch(ledger)
    for i, who in enumerate(senders):
        b.add(who, "rose", 1, "h", (seq + 1 + i, 99, 1, False))
    calls, carried = batches()
    await b.check()
    assert batches() == (calls + 2, carried + len(senders))  # two send_gifts, no send_gift
    setting = "stream-node-max-entries"
    node = int((await ledger.redis.config_get(setting))[setting])
    assert len(senders) > cap + node  # untrimmed, the history would be past the bound
    history = await ledger.redis.xrange(keys.stream_history("s1"))
    assert len(history) <= cap + node
    assert history[-1][0] == f"{seq + len(senders)}-0"  # the newest kept
    await assert_reconciled(ledger)
