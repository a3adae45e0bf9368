"""Attacks on the batched steps of gifts across slots (ledger/transfer_batch.py):
many gifts at once to one stream and to a streamer's several streams, a key sent
twice at once, the relay racing a worker's batched credits, a stream ended between
the debits and their credits, a batch across a UTC midnight. Whatever the
interleaving: each transfer credited once on each side, the diamonds exact, the
journal's gifts one to one with the stream's events, every outbox empty, and
`reconcile` content."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from redis.asyncio.cluster import RedisCluster

from gifting_server import events
from gifting_server.auth import Identity, Role
from gifting_server.config import Settings
from gifting_server.hub.redis_history import RedisHistory
from gifting_server.ledger import battles, gifts, keys, streams, transfers, wallet
from gifting_server.ledger.clock import DAY_MS, day_number
from gifting_server.ledger.store import Store
from gifting_server.ledger.transfer_batch import StreamCredits, StreamerCredits
from tests.factories import live_stream, viewer
from tests.ledger.support import T0, journal_entries, snapshot
from tests.ledger.test_concurrency import assert_reconciled
from tests.ledger.transfers_support import (
    GIFT_LIMITS_OUT_OF_REACH,
    across_slots_settings,
    clock_of,
    credit_together,
    debit_only,
    gift_event_ids,
    gift_of,
    gift_records,
    open_ledger,
    pending,
    relay,
    send,
    transfer_of,
)
from tests.topology import async_client

SENDERS = [viewer(f"v{i}") for i in range(12)]
STREAMS = ("s1", "s2", "s3")  # all streamer1's
Sent = tuple[str, str, str, int]  # sender, key, stream, coins


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    return across_slots_settings(redis_url, tmp_path, limits=GIFT_LIMITS_OUT_OF_REACH)


@pytest.fixture
async def ledger(store: Store) -> Store:
    return await open_ledger(store, SENDERS, STREAMS, funds=2)


async def assert_exact(store: Store, sent: list[Sent]) -> None:
    """Each gift of `sent` credited exactly once on each side: one event in its
    stream's history, one journal line, the stream's and the streamer's totals its
    sum, the diamonds the creator share of the lifetime coins, nothing left pending."""
    assert await pending(store, SENDERS) == []
    records = await gift_records(store)
    assert Counter((r["user"], r["key"]) for r in records) == Counter(
        (who, key) for who, key, _, _ in sent
    )
    for stream in STREAMS:
        mine = [s for s in sent if s[2] == stream]
        events = await gift_event_ids(store, stream)
        assert events == sorted(events) and len(set(events)) == len(events)
        journaled = sorted(int(r["event_id"]) for r in records if r["stream"] == stream)
        assert journaled == events and len(events) == len(mine)
        coins = await store.redis.hget(keys.stream(stream), "coins")
        assert int(coins or 0) == sum(c for *_, c in mine)
    total = sum(c for *_, c in sent)
    share = store.settings.economy.creator_share_bps
    streamer = await wallet.read_wallet(store, "streamer1")
    assert streamer["diamonds"] == total * share // 10_000
    assert sum(int(r["diamonds"]) for r in records) == streamer["diamonds"]
    assert sum(int(r["platform"]) for r in records) == total - streamer["diamonds"]
    await assert_reconciled(store)


async def test_many_senders_gifting_one_stream_at_once_are_each_credited_once(
    ledger: Store,
) -> None:
    # Three rounds of twelve senders, each round at once: combos, a busy stream.
    sent: list[Sent] = []
    for n in range(3):
        calls = [send(ledger, f"k{n}", v) for v in SENDERS]
        receipts = await asyncio.gather(*calls)
        assert [r.combo for r in receipts] == [n + 1] * len(SENDERS)
        sent += [(v.user_id, f"k{n}", "s1", 5) for v in SENDERS]
    await assert_exact(ledger, sent)


async def test_a_replay_of_a_busy_streams_batched_credits_gives_every_event_once(
    ledger: Store,
) -> None:
    """Batched stream credits (credit_stream_batch) group a call's events after its
    first into one history entry: the replay after any `since` still gives each event
    once, in order, on either topology."""
    for n in range(3):
        await asyncio.gather(*(send(ledger, f"k{n}", v) for v in SENDERS))
    rows = await ledger.redis.xrange(keys.stream_history("s1"))
    assert any("\n" in fields["e"] for _, fields in rows)  # some entry is grouped
    last = int(await ledger.redis.hget(keys.stream("s1"), "seq"))
    assert ledger.settings.redis_url
    client = await async_client(str(ledger.settings.redis_url))
    try:
        history = RedisHistory(client)
        for since in range(last + 1):
            replay = await history.replay("s1", since)
            assert replay.recovered, since
            got = [events.event_id_of(raw) for raw in replay.events]
            assert got == list(range(since + 1, last + 1)), since
    finally:
        await client.aclose()


async def test_gifts_to_a_streamers_several_streams_at_once_are_each_credited_once(
    ledger: Store,
) -> None:
    sent: list[Sent] = []
    calls = []
    for i in range(len(SENDERS)):
        for n, stream in enumerate(STREAMS):
            gift_id = ("finger_heart", "rose", "doughnut")[(i + n) % 3]
            calls.append(send(ledger, f"k{n}", SENDERS[i], gift_id, stream))
            sent.append((SENDERS[i].user_id, f"k{n}", stream, gift_of(ledger, gift_id).coins))
    await asyncio.gather(*calls)
    await assert_exact(ledger, sent)


async def test_a_key_sent_twice_at_once_is_credited_once_and_answered_alike(
    ledger: Store,
) -> None:
    # Each sender's key twice in one pass (the same batch), then again in the next
    # passes while the first two are under way (another batch).
    first = [send(ledger, "k", v) for v in SENDERS]
    twice = [send(ledger, "k", v) for v in SENDERS]
    racing = asyncio.gather(*first, *twice)
    await asyncio.sleep(0)
    later = await asyncio.gather(*(send(ledger, "k", v) for v in SENDERS))
    answers = await racing
    for i in range(len(SENDERS)):
        a, b, c = answers[i], answers[len(SENDERS) + i], later[i]
        assert (a.event_id, a.coins, a.combo) == (b.event_id, b.coins, b.combo)
        assert (a.event_id, a.coins, a.combo) == (c.event_id, c.coins, c.combo)
        assert sorted([a.replayed, b.replayed, c.replayed]) == [False, True, True]
        assert a.coins == 195
    await assert_exact(ledger, [(v.user_id, "k", "s1", 5) for v in SENDERS])


async def test_the_relay_racing_a_workers_batched_credits_credits_each_transfer_once(
    ledger: Store,
) -> None:
    debits = [await debit_only(ledger, f"k{n}", v) for n in range(2) for v in SENDERS]
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    results = await asyncio.gather(credit_together(ledger, debits), relay(ledger, SENDERS))
    credited = results[0]
    assert all(isinstance(c, transfers.Credited) for c in credited), credited
    # A worker and the relay answer a transfer alike, whichever credited it.
    again = await asyncio.gather(
        *(transfers.finish(ledger, transfer_of(d), d.daily_limit) for d in debits)
    )
    assert again == credited
    await assert_exact(ledger, [(v.user_id, f"k{n}", "s1", 5) for n in range(2) for v in SENDERS])


async def test_a_stream_ended_between_the_debits_and_their_batched_credits_still_lands(
    ledger: Store,
) -> None:
    debits = [await debit_only(ledger, "k", v) for v in SENDERS]
    await streams.end_stream(ledger, "streamer1", "s1")
    credited = await credit_together(ledger, debits)
    assert all(isinstance(c, transfers.Credited) for c in credited), credited
    await assert_exact(ledger, [(v.user_id, "k", "s1", 5) for v in SENDERS])


async def test_a_batch_across_midnight_journals_each_gift_on_its_own_day(ledger: Store) -> None:
    clock = clock_of(ledger)
    midnight = (day_number(T0) + 1) * DAY_MS
    clock.advance(midnight - 1 - T0)
    before = [await debit_only(ledger, "k", v) for v in SENDERS[::2]]
    clock.advance(1)
    after = [await debit_only(ledger, "k", v) for v in SENDERS[1::2]]
    # Interleaved, as a worker's flush would hold them, with a replay among them.
    mixed = [d for pair in zip(before, after, strict=True) for d in pair] + [before[0]]
    credited = await credit_together(ledger, mixed)
    assert all(isinstance(c, transfers.Credited) for c in credited), credited
    assert credited[-1] == credited[0]
    for day, debits in ((day_number(midnight - 1), before), (day_number(midnight), after)):
        board = await ledger.redis.zrange(
            keys.channel_leaderboard("streamer1", "day", day), 0, -1, withscores=True
        )
        assert sorted(board) == sorted((transfer_of(d).sender, 5.0) for d in debits)
    await assert_exact(ledger, [(v.user_id, "k", "s1", 5) for v in SENDERS])


async def test_a_wrong_typed_board_moves_no_diamond_until_repaired_then_credits_once(
    ledger: Store,
) -> None:
    """A board planted with another type (only someone with Redis access can) fails the
    streamer's step of every transfer, alone or batched: none of its diamonds may be
    written without its record, else each retry and relay pass pays them again."""
    await send(ledger, "first", SENDERS[0])
    before = await wallet.read_wallet(ledger, "streamer1")
    platform = await ledger.redis.hget(keys.platform_account("streamer1"), "coins")
    day_board = keys.channel_leaderboard("streamer1", "day", day_number(T0))
    await ledger.redis.delete(day_board)
    await ledger.redis.set(day_board, "planted")
    debits = [await debit_only(ledger, "k", v) for v in SENDERS[1:]]
    results = await credit_together(ledger, debits)
    assert all(isinstance(r, transfers.GiftingError) for r in results), results
    for _ in range(3):
        clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
        assert await relay(ledger, SENDERS) == 0
        assert await wallet.read_wallet(ledger, "streamer1") == before
        assert await ledger.redis.hget(keys.platform_account("streamer1"), "coins") == platform
    await ledger.redis.delete(day_board)  # repaired: the relay finishes each once
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger, SENDERS) == len(debits)
    sent = [(v.user_id, "k", "s1", 5) for v in SENDERS[1:]]
    await assert_exact(ledger, [(SENDERS[0].user_id, "first", "s1", 5), *sent])


async def test_a_batched_stream_credit_that_fails_leaves_nothing_of_the_failing_transfer(
    ledger: Store,
) -> None:
    """A busy stream's flush whose first transfer fails after its history entry (a board
    planted with another type): the call writes what the transfers before it left, and
    nothing of that one, whose record it did not write: its coins and place in the
    stream's sequence written would be counted again by the relay's credit."""
    await send(ledger, "first", SENDERS[0])
    meta_before = await ledger.redis.hmget(keys.stream("s1"), "seq", "coins")
    board = keys.stream_leaderboard("s1")
    await ledger.redis.delete(board)
    await ledger.redis.set(board, "planted")
    debits = [await debit_only(ledger, "k", v) for v in SENDERS[1:6]]
    calls = [transfers.credit_stream_call(ledger, transfer_of(d)) for d in debits]
    credits = StreamCredits.of(ledger.scripts)
    group = (*(calls[0][0][i] for i in credits.SHARED_KEYS),)
    group += (*(calls[0][1][i] for i in credits.SHARED_ARGS), 1)
    with pytest.raises(redis.ResponseError):
        await credits.call(group, calls)
    assert await ledger.redis.hmget(keys.stream("s1"), "seq", "coins") == meta_before
    assert await ledger.redis.hget(keys.stream("s1"), "c:v1:finger_heart") is None


async def streamer_batch(store: Store, debits: list[transfers.Debited]) -> list[list[object]]:
    """These transfers credited on their stream one by one, then on the streamer in one
    batched call (credit_streamer_batch), as a busy streamer's flush sends them."""
    calls = []
    for d in debits:
        credited = await transfers.credit_stream(store, transfer_of(d))
        calls.append(transfers.credit_streamer_call(store, transfer_of(d), credited, d.daily_limit))
    credits = StreamerCredits.of(store.scripts)
    group = (*(calls[0][0][i] for i in credits.SHARED_KEYS),)
    group += (*(calls[0][1][i] for i in credits.SHARED_ARGS),)
    return await credits.call(group, calls)


async def held_sum(store: Store) -> int:
    return sum(
        int(v) for v in (await store.redis.hgetall(keys.held_diamonds("streamer1"))).values()
    )


@pytest.mark.parametrize("planted", ["held", "platform", "journal"])
async def test_a_batched_streamer_credit_refused_by_a_planted_key_credits_each_once_when_repaired(
    ledger: Store, planted: str
) -> None:
    """The held bucket, the platform account and the journal are written at a batched
    streamer's call's end, for all its transfers at once. One planted with another type
    (only someone with Redis access can) refuses every transfer of the call with nothing
    written: no record that would count a transfer credited without its journal line,
    platform share or held diamonds, no diamonds that the relay would pay again. Once
    the key is repaired the relay credits each transfer once."""
    await send(ledger, "first", SENDERS[0])
    key = {
        "held": keys.held_diamonds("streamer1"),
        "platform": keys.platform_account("streamer1"),
        "journal": keys.journal("streamer1"),
    }[planted]
    before = await wallet.read_wallet(ledger, "streamer1")
    platform = await ledger.redis.hget(keys.platform_account("streamer1"), "coins")
    entries = await ledger.redis.xlen(keys.journal("streamer1"))
    saved = key + ":saved"  # the same hash tag: the same slot
    await ledger.redis.rename(key, saved)
    await ledger.redis.set(key, "planted")
    debits = [await debit_only(ledger, "k", SENDERS[i]) for i in range(1, 6)]
    replies = await streamer_batch(ledger, debits)
    assert replies == [[17]] * len(debits)  # CORRUPT_VALUE: the client's storage_corrupt
    wallet_key = keys.wallet("streamer1")
    for d in debits:
        credit_id = transfer_of(d).credit_id
        assert await ledger.redis.get(keys.credited(wallet_key, credit_id)) is None
    assert await wallet.read_wallet(ledger, "streamer1") == before
    if planted != "platform":
        assert await ledger.redis.hget(keys.platform_account("streamer1"), "coins") == platform
    if planted != "journal":
        assert await ledger.redis.xlen(keys.journal("streamer1")) == entries
    assert len(await pending(ledger, SENDERS)) == len(debits)
    await ledger.redis.delete(key)
    await ledger.redis.rename(saved, key)  # repaired: the relay finishes each once
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger, SENDERS) == len(debits)
    sent = [(v.user_id, "k", "s1", 5) for v in SENDERS[1:6]]
    await assert_exact(ledger, [(SENDERS[0].user_id, "first", "s1", 5), *sent])
    assert await held_sum(ledger) == (await wallet.read_wallet(ledger, "streamer1"))["diamonds"]


async def test_a_batched_streamer_credit_failed_at_its_end_pays_no_diamond_twice(
    ledger: Store,
) -> None:
    """A platform account of the right type holding no integer fails a batched
    streamer's call at its end (HINCRBY), after its checks and its boards. The
    streamer's diamonds and the transfers' records are written after the held bucket,
    the platform account and the journal: none of them counts a transfer, which the
    relay credits once the account is repaired, its diamonds, platform share and
    journal line exactly once. Its boards and held diamonds, written before the
    failure, the relay adds again, as it does for credit_streamer's own step failed
    there: `reconcile` names the boards."""
    await send(ledger, "first", SENDERS[0])
    platform = keys.platform_account("streamer1")
    owed = await ledger.redis.hget(platform, "coins")
    await ledger.redis.hset(platform, "coins", "planted")
    before = await wallet.read_wallet(ledger, "streamer1")
    debits = [await debit_only(ledger, "k", SENDERS[i]) for i in range(1, 6)]
    with pytest.raises(redis.ResponseError):
        await streamer_batch(ledger, debits)
    assert await wallet.read_wallet(ledger, "streamer1") == before
    wallet_key = keys.wallet("streamer1")
    for d in debits:
        credit_id = transfer_of(d).credit_id
        assert await ledger.redis.get(keys.credited(wallet_key, credit_id)) is None
    await ledger.redis.hset(platform, "coins", str(owed))  # repaired
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger, SENDERS) == len(debits)
    records = [e for e in await journal_entries(ledger.redis) if e["type"] == "gift"]
    assert sorted((r["user"], r["key"]) for r in records) == [
        (v.user_id, key) for v, key in zip(SENDERS[:6], ["first"] + ["k"] * 5, strict=True)
    ]
    diamonds = (await wallet.read_wallet(ledger, "streamer1"))["diamonds"]
    assert diamonds == 6 * 5 * ledger.settings.economy.creator_share_bps // 10_000
    assert sum(int(r["diamonds"]) for r in records) == diamonds
    assert int(await ledger.redis.hget(platform, "coins") or 0) == 6 * 5 - diamonds
    assert await pending(ledger, SENDERS) == []


def masters(store: Store, redis_url: str) -> list[redis.Redis]:
    """Plain clients of every master (the one Redis on a single Redis)."""
    if isinstance(store.redis, RedisCluster):
        return [redis.Redis(host=n.host, port=n.port) for n in store.redis.get_primaries()]
    return [redis.Redis.from_url(redis_url)]


async def test_connections_dropped_at_any_pass_of_a_flush_leave_each_gift_credited_once(
    ledger: Store, redis_url: str
) -> None:
    """The worker's connections cut (CLIENT KILL) after 0 to 19 passes of the loop into
    a round of gifts to a streamer's three streams: at the gate, the debit, a batched
    credit on either side, the outbox's clearing. An acknowledged gift is credited on
    both sides; any other one is credited or left to the relay, which finishes it."""
    acked: list[tuple[str, str]] = []
    killers = masters(ledger, redis_url)
    try:
        for n in range(40):
            calls = [
                asyncio.ensure_future(send(ledger, f"c{n}", SENDERS[i], stream=STREAMS[i % 3]))
                for i in range(len(SENDERS))
            ]
            for _ in range(n % 20):
                await asyncio.sleep(0)
            for node in killers:
                node.client_kill_filter(_type="normal", skipme=True)
            results = await asyncio.gather(*calls, return_exceptions=True)
            for i, result in enumerate(results):
                if isinstance(result, gifts.GiftReceipt):
                    acked.append((SENDERS[i].user_id, f"c{n}"))
                else:
                    assert isinstance(result, transfers.GiftingError), result
    finally:
        for node in killers:
            node.close()
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    await relay(ledger, SENDERS)
    records = await gift_records(ledger)
    credited = Counter((r["user"], r["key"]) for r in records)
    assert set(acked) <= set(credited) and set(credited.values()) == {1}
    await assert_exact(ledger, [(r["user"], r["key"], r["stream"], 5) for r in records])


async def test_a_wrong_typed_battle_top_counts_no_gift_again_on_each_relay_pass(
    ledger: Store,
) -> None:
    """During a battle, a stream's battle top planted with another type fails the
    stream's step after its history entry: the stream's coins, sequence and battle
    points of that transfer must not be written without its record, else each relay
    pass adds its event and counts its coins and points again."""
    clock_of(ledger).now = int(time.time() * 1000)  # a battle runs on Redis's clock
    await live_stream(ledger, "s9", "streamer9")
    one = Identity("streamer1", "One", Role.STREAMER)
    invited, _ = await battles.invite(ledger, one, "s1", "s9", 600, "inv")
    await battles.accept(ledger, Identity("streamer9", "Nine", Role.STREAMER), invited["battle_id"])
    await send(ledger, "first", SENDERS[0])
    fields = ("seq", "coins", "battle_points")
    before = await ledger.redis.hmget(keys.stream("s1"), *fields)
    top = keys.battle_top("s1")
    await ledger.redis.delete(top)
    await ledger.redis.set(top, "planted")
    debits = [await debit_only(ledger, "k", v) for v in SENDERS[1:6]]
    results = await credit_together(ledger, debits)
    assert all(isinstance(r, transfers.GiftingError) for r in results), results
    for _ in range(3):
        clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
        assert await relay(ledger, SENDERS) == 0
        assert await ledger.redis.hmget(keys.stream("s1"), *fields) == before
        assert len(await gift_event_ids(ledger, "s1")) <= 2  # the first, and one failed


async def test_a_wrong_typed_platform_account_pays_no_diamond_again_on_each_relay_pass(
    ledger: Store,
) -> None:
    """The platform account is added to unread (HINCRBY): planted with another type it
    fails the streamer's step, which the relay tries again each pass. The streamer's
    diamonds are written after it, so no pass pays them."""
    await send(ledger, "first", SENDERS[0])
    before = await wallet.read_wallet(ledger, "streamer1")
    platform = keys.platform_account("streamer1")
    await ledger.redis.delete(platform)
    await ledger.redis.set(platform, "planted")
    await debit_only(ledger, "k", SENDERS[1])
    for _ in range(3):
        clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
        assert await relay(ledger, SENDERS) == 0
        assert await wallet.read_wallet(ledger, "streamer1") == before
    assert await pending(ledger, SENDERS) == [f"{SENDERS[1].user_id}:k"]


# What is planted on the streamer's side of a transfer the relay finishes: a key of
# another type, or a hash field holding no integer.
PLANTED = {
    "all-time board of another type": ("all", None),
    "journal of another type": ("journal", None),
    "platform account of another type": ("platform", None),
    "platform account holding no integer": ("platform", "coins"),
    "held bucket of another type": ("held", None),
    "held bucket holding no integer": ("held", "held_until"),
}


async def streamer_side(store: Store) -> dict[str, object]:
    """Every key of the streamer's slot, with its content."""
    tag = keys.wallet("streamer1").split("}")[0] + "}"
    return {k: v for k, v in (await snapshot(store.redis)).items() if k.startswith(tag)}


@pytest.mark.parametrize("planted", PLANTED)
async def test_a_key_planted_on_the_streamers_side_is_written_no_more_on_each_relay_pass(
    ledger: Store, planted: str
) -> None:
    """The relay tries a transfer whose streamer's step failed again every pass. A key
    that step writes unread (only someone with Redis access can plant one) fails that
    step; before it, each pass would write again what comes before the failing write:
    a board point, a journal line, held diamonds. The relay's pass checks those keys
    first and writes nothing of the transfer; once the key is repaired, it credits the
    transfer once."""
    await send(ledger, "first", SENDERS[0])
    transfer = transfer_of(await debit_only(ledger, "k", SENDERS[1]))
    name, field = PLANTED[planted]
    key = {
        "all": keys.channel_leaderboard("streamer1", "all"),
        "journal": keys.journal("streamer1"),
        "platform": keys.platform_account("streamer1"),
        "held": keys.held_diamonds("streamer1"),
    }[name]
    if field == "held_until":
        field = str(transfer.held_until)
    saved = key + ":saved"  # the same hash tag: the same slot
    before_value = None
    if field is None:
        await ledger.redis.rename(key, saved)
        await ledger.redis.set(key, "planted")
    else:
        before_value = await ledger.redis.hget(key, field)
        await ledger.redis.hset(key, field, "x")
    planted_state = await streamer_side(ledger)
    for _ in range(3):
        clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
        assert await relay(ledger, SENDERS) == 0
        assert await streamer_side(ledger) == planted_state
    # Repaired: the relay finishes the transfer once.
    if field is None:
        await ledger.redis.delete(key)
        await ledger.redis.rename(saved, key)
    elif before_value is None:
        await ledger.redis.hdel(key, field)
    else:
        await ledger.redis.hset(key, field, before_value)
    clock_of(ledger).advance(ledger.settings.transfers.relay_after_ms)
    assert await relay(ledger, SENDERS) == 1
    sent = [(SENDERS[0].user_id, "first", "s1", 5), (SENDERS[1].user_id, "k", "s1", 5)]
    await assert_exact(ledger, sent)
