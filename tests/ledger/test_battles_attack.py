"""Battles attacked from the side: steps of two workers interleaved (one read the
battle before the other moved it), a stream ending and going live again between a
forfeit's steps, invites crossing, gifts racing the end on every gift path. Real
Redis (single or cluster), the ledger's own steps, no fakes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest
from prometheus_client import REGISTRY

from gifting_server.auth import Identity, Role
from gifting_server.config import Settings
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import (
    battle_record,
    battle_steps,
    battles,
    gifts,
    keys,
    streams,
    transfers,
)
from gifting_server.ledger.battle_ticker import BattleTicker
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import Store, connect
from tests import topology
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import journal_entries
from tests.ledger.test_battles_recovery import MovableClock, meta
from tests.redis_process import RedisProcess
from tests.topology import RedisUnderFault

T = TypeVar("T")

ONE = Identity("streamer1", "Streamer One", Role.STREAMER)
TWO = Identity("streamer2", "Streamer Two", Role.STREAMER)


@pytest.fixture
async def ledger(settings: Settings) -> AsyncIterator[Store]:
    quick = dataclasses.replace(
        settings,
        battles=dataclasses.replace(settings.battles, min_duration_s=1, invite_ttl_s=1),
        # gifts as fast as they go, to race the end
        limits=dataclasses.replace(settings.limits, gift_rate_per_s=100_000, gift_burst=100_000),
    )
    assert quick.redis_url
    store = Store(await connect(quick.redis_url, quick.limits.request_timeout_s), quick)
    for n in (1, 2, 3):
        await live_stream(store, f"s{n}", f"streamer{n}")
    yield store
    await store.close()


async def until_ended(store: Store, battle_id: str) -> dict[str, Any]:
    """Advance the battle as a ticker would until Redis's clock passed its end."""
    for _ in range(600):
        record = await battle_steps.advance(store, await battle_record.read_known(store, battle_id))
        if record.status == "ended":
            return await battles.get(store, battle_id)
        await asyncio.sleep(0.01)
    raise AssertionError("the battle did not end")


def gifts_batched() -> float:
    """Gifts sent in a send_gifts call with others so far (gift_batch.py)."""
    return REGISTRY.get_sample_value("gifting_gifts_batched_total") or 0.0


async def end_stream_step(store: Store, stream_id: str, streamer: str) -> None:
    """The end_stream script alone: the worker that ran it died before its next step."""
    await store.run_script(
        "end_stream",
        [keys.stream(stream_id), keys.stream_history(stream_id)],
        [streamer, store.clock(), 100, keys.stream_channel(stream_id)],
    )


async def test_an_expiry_that_read_the_invite_before_its_accept_leaves_the_battle_live(
    ledger: Store,
) -> None:
    invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 2, "inv")
    battle_id = invited["battle_id"]
    seen = await battle_record.read_known(ledger, battle_id)  # the ticker reads it...
    await battles.accept(ledger, TWO, battle_id)  # ...the invited streamer accepts...
    clock = ledger.clock = MovableClock(ledger)
    clock.ahead = 2_000  # ...and the ticker, whose clock says the invite expired, goes on
    await battle_steps.advance(ledger, seen)
    clock.ahead = 0
    assert (await battles.get(ledger, battle_id))["status"] == "live"
    for stream_id in ("s1", "s2"):  # both sides still locked and counting
        assert await meta(ledger, stream_id, "battle_lock") == battle_id
        assert (await meta(ledger, stream_id, "battle") or "").startswith(battle_id + "|")
    assert await ledger.redis.zscore(keys.BATTLES_DUE, battle_id) is not None
    await fund(ledger, "alice", "coins_500")
    await gifts.send_gift(ledger, viewer("alice"), "s1", "rose", 3, "a1")
    ended = await until_ended(ledger, battle_id)
    assert [s["points"] for s in ended["sides"]] == [3, 0] and ended["winner"] == "s1"


async def test_cancelling_an_invite_that_was_accepted_meanwhile_leaves_the_battle_live(
    ledger: Store,
) -> None:
    # A stream's end (or an expiry) read the battle as `invited`; the accept won the
    # step: what it then does must not let the streams go of a battle that started.
    invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 2, "inv")
    battle_id = invited["battle_id"]
    await battles.accept(ledger, TWO, battle_id)
    await battle_steps.close_unstarted(ledger, battle_id, "stream_ended")
    assert (await battles.get(ledger, battle_id))["status"] == "live"
    assert await meta(ledger, "s1", "battle_lock") == battle_id
    assert (await meta(ledger, "s1", "battle") or "").startswith(battle_id + "|")
    assert await ledger.redis.zscore(keys.BATTLES_DUE, battle_id) is not None
    assert (await until_ended(ledger, battle_id))["reason"] == "time"


async def test_a_stream_ending_as_its_invite_is_accepted_forfeits_the_battle(
    ledger: Store,
) -> None:
    for round_ in range(8):
        invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 60, f"r{round_}")
        battle_id = invited["battle_id"]
        results = await asyncio.gather(
            battles.accept(ledger, TWO, battle_id),
            streams.end_stream(ledger, "streamer1", "s1"),
            return_exceptions=True,
        )
        final = await battle_steps.advance(
            ledger, await battle_record.read_known(ledger, battle_id)
        )
        shown = await battles.get(ledger, battle_id)
        assert final.status in ("ended", "cancelled"), (results, shown)
        if final.status == "ended":
            assert (shown["reason"], shown["winner"]) == ("forfeit", "s2"), shown
        for stream_id in ("s1", "s2"):
            assert await meta(ledger, stream_id, "battle_lock") is None, (results, shown)
            assert await meta(ledger, stream_id, "battle") is None, (results, shown)
        assert await ledger.redis.zscore(keys.BATTLES_DUE, battle_id) is None
        await live_stream(ledger, "s1", "streamer1")


async def test_a_forfeit_stands_when_the_stream_goes_live_again_before_the_sides_close(
    ledger: Store,
) -> None:
    await fund(ledger, "alice", "coins_500")
    invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 60, "inv")
    battle_id = invited["battle_id"]
    await battles.accept(ledger, TWO, battle_id)
    await gifts.send_gift(ledger, viewer("alice"), "s1", "rose", 5, "a1")  # s1 leads
    # s1 ends: the forfeit is written, then its worker dies before the sides close
    await end_stream_step(ledger, "s1", "streamer1")
    await battle_steps.step(ledger, battle_id, "live", "live", forfeit="s1")
    await live_stream(ledger, "s1", "streamer1")  # and s1 is back before any ticker
    ended = await until_ended(ledger, battle_id)
    assert (ended["reason"], ended["winner"]) == ("forfeit", "s2"), ended


async def test_two_invites_crossing_leave_at_most_one_battle_and_no_stream_locked_for_nothing(
    ledger: Store,
) -> None:
    shown = set()
    for round_ in range(6):
        results = await asyncio.gather(
            battles.invite(ledger, ONE, "s1", "s2", 60, f"a{round_}"),
            battles.invite(ledger, TWO, "s2", "s1", 60, f"b{round_}"),
            return_exceptions=True,
        )
        won = [r[0] for r in results if not isinstance(r, BaseException)]
        shown |= {battle["battle_id"] for battle in won}
        assert all(
            isinstance(r, GiftingError) and r.code is ErrorCode.BATTLE_CONFLICT
            for r in results
            if isinstance(r, BaseException)
        ), results
        assert len(won) <= 1, results
        locks = {await meta(ledger, s, "battle_lock") for s in ("s1", "s2")}
        assert locks == ({won[0]["battle_id"]} if won else {None}), (results, locks)
        for battle in won:
            await battles.cancel(ledger, ONE, battle["battle_id"])
    # a refused invite was never shown: no stream gets a `battle` event of it
    for stream_id in ("s1", "s2"):
        rows = await ledger.redis.xrange(keys.stream_history(stream_id))
        events = [orjson.loads(fields["e"]) for _, fields in rows]
        published = {e["battle_id"] for e in events if e["kind"] == "battle"}
        assert published <= shown, (stream_id, published - shown)
        last = await meta(ledger, stream_id, "battle_pub")
        assert last is None or any(battle_id in last for battle_id in shown), last


async def test_gifts_racing_the_end_count_exactly_as_the_journal_says(ledger: Store) -> None:
    users = [("alice", "s1"), ("bob", "s2"), ("carol", "s1"), ("dave", "s2")]
    for user, _ in users:
        await fund(ledger, user, "coins_500", times=20)
    batched = gifts_batched()
    invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 1, "inv")
    battle_id = invited["battle_id"]
    await battles.accept(ledger, TWO, battle_id)
    stop = asyncio.Event()

    async def gifting(user: str, stream_id: str) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            await gifts.send_gift(ledger, viewer(user), stream_id, "rose", 1, f"{user}{n}")

    # several senders at once: on one Redis their gifts go together in one send_gifts
    senders = [asyncio.create_task(gifting(user, stream_id)) for user, stream_id in users]
    try:
        ended = await until_ended(ledger, battle_id)
        await asyncio.sleep(0.05)  # a few more gifts after the end, which count for nobody
    finally:
        stop.set()
        await asyncio.gather(*senders)
    entries = await journal_entries(ledger.redis)
    for side in ended["sides"]:
        counted = [
            int(e["coins"])
            for e in entries
            if e.get("battle") == battle_id and e.get("stream") == side["stream_id"]
        ]
        assert side["points"] == sum(counted) > 0
        after = [e for e in entries if e.get("stream") == side["stream_id"] and not e.get("battle")]
        assert after, "no gift ran past the end"
    share = ledger.settings.economy.creator_share_bps
    report = await reconcile(ledger.redis, share)
    assert report.ok, report.problems
    if not ledger.gifts_across_slots:
        assert gifts_batched() > batched  # the batched path raced too


def across_slots_only(store: Store) -> None:
    if not store.gifts_across_slots:
        pytest.skip("a transfer's steps: only a gift across slots has them")


async def relay_all(store: Store) -> int:
    slot = keys.slot_of_tag("u:alice")
    return await transfers.relay_transfers(store, [slot], store.clock() + 1)


async def test_a_gift_debited_before_the_end_but_credited_after_it_counts_for_nobody(
    ledger: Store,
) -> None:
    across_slots_only(ledger)
    await fund(ledger, "alice", "coins_500")
    invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 1, "inv")
    battle_id = invited["battle_id"]
    await battles.accept(ledger, TWO, battle_id)
    await gifts.send_gift(ledger, viewer("alice"), "s1", "rose", 2, "a1")
    rose = ledger.settings.gift("rose")
    assert rose is not None
    sender = viewer("alice")
    # debited during the battle; the worker died before the stream's step
    await transfers.debit(
        ledger, sender, "s1", "streamer1", rose, 3, "late", gifts.event_fragment(sender, rose)
    )
    ended = await until_ended(ledger, battle_id)
    assert await relay_all(ledger) == 1  # the relay finishes it after the end
    assert [s["points"] for s in ended["sides"]] == [2, 0]
    assert (await battles.get(ledger, battle_id)) == ended
    late = [e for e in await journal_entries(ledger.redis) if e.get("coins") == "3"]
    assert len(late) == 1 and not late[0].get("battle")
    report = await reconcile(ledger.redis, ledger.settings.economy.creator_share_bps)
    assert report.ok, report.problems


async def test_a_gift_credited_to_its_stream_before_the_end_is_journaled_for_it_when_finished_late(
    ledger: Store,
) -> None:
    across_slots_only(ledger)
    await fund(ledger, "alice", "coins_500")
    invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 1, "inv")
    battle_id = invited["battle_id"]
    await battles.accept(ledger, TWO, battle_id)
    rose = ledger.settings.gift("rose")
    assert rose is not None
    sender = viewer("alice")
    debited = await transfers.debit(
        ledger, sender, "s1", "streamer1", rose, 4, "late", gifts.event_fragment(sender, rose)
    )
    assert debited.transfer is not None
    credited = await transfers.credit_stream(ledger, debited.transfer)  # counted...
    assert credited.battle == battle_id
    ended = await until_ended(ledger, battle_id)  # ...then the worker died; the end came
    assert [s["points"] for s in ended["sides"]] == [4, 0]
    assert await relay_all(ledger) == 1
    late = [e for e in await journal_entries(ledger.redis) if e.get("coins") == "4"]
    assert len(late) == 1 and late[0].get("battle") == battle_id
    assert int(late[0]["battle_at"]) < ended["ends_at"]
    # a retry of the same gift after the end answers the first result, counts nothing more
    await gifts.send_gift(ledger, sender, "s1", "rose", 4, "late")
    assert (await battles.get(ledger, battle_id)) == ended
    report = await reconcile(ledger.redis, ledger.settings.economy.creator_share_bps)
    assert report.ok, report.problems


async def test_two_tickers_that_lose_the_lease_mid_battle_publish_the_end_once(
    ledger: Store,
) -> None:
    await fund(ledger, "alice", "coins_500")
    invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 1, "inv")
    battle_id = invited["battle_id"]
    await battles.accept(ledger, TWO, battle_id)
    first, second = BattleTicker(ledger), BattleTicker(ledger)
    for n in range(400):
        if n % 3 == 0:
            await gifts.send_gift(ledger, viewer("alice"), "s1", "rose", 1, f"a{n}")
        # the lease lost each round: both tick at once, each believing it holds it
        await ledger.redis.delete(keys.BATTLES_LEASE)
        await asyncio.gather(first.tick(), ledger.redis.delete(keys.BATTLES_LEASE), second.tick())
        if (await battle_record.read_known(ledger, battle_id)).status == "ended":
            break
        await asyncio.sleep(0.005)
    ended = await battles.get(ledger, battle_id)
    assert ended["status"] == "ended"
    for _ in range(3):  # and ticks after the end publish nothing more
        await ledger.redis.delete(keys.BATTLES_LEASE)
        await asyncio.gather(first.tick(), second.tick())
    for stream_id in ("s1", "s2"):
        rows = await ledger.redis.xrange(keys.stream_history(stream_id))
        events = [orjson.loads(fields["e"]) for _, fields in rows]
        finals = [e for e in events if e["kind"] == "battle" and e["status"] == "ended"]
        assert len(finals) == 1, finals
        assert finals[0]["sides"] == ended["sides"]
    assert await ledger.redis.zscore(keys.BATTLES_DUE, battle_id) is None


async def invite_step_one(store: Store, battle_id: str, key: str) -> None:
    """Step 1 of an invite of s2 by s1 for 60 s, as `battles.invite` runs it."""
    await store.run_script(
        "battle_invite",
        [keys.stream("s1"), keys.battle(battle_id), keys.battle_invitation("s1", key)],
        ["streamer1", battle_id, "s2|60", "s2", 60, store.clock(), 60_000, "s1"],
    )


@pytest.mark.parametrize("steps_done", [1, 2])
async def test_an_invite_retried_with_its_key_after_its_worker_died_goes_on_from_where_it_was(
    ledger: Store, steps_done: int
) -> None:
    battle_id = "bt_0123456789abcdef0123.s1"
    await invite_step_one(ledger, battle_id, "k")
    if steps_done == 2:
        await ledger.run_script("battle_lock", [keys.stream("s2")], [battle_id, "streamer1"])
    again, _ = await battles.invite(ledger, ONE, "s1", "s2", 60, "k")
    assert (again["battle_id"], again["status"]) == (battle_id, "invited")
    assert again["expires_at"] > 0
    assert await meta(ledger, "s2", "battle_lock") == battle_id
    due = await ledger.redis.zrange(keys.BATTLES_DUE, 0, -1)
    assert due == [battle_id]  # the id drawn for the retry is not left on the due list
    accepted = await battles.accept(ledger, TWO, battle_id)
    assert accepted["status"] == "live"


@pytest.mark.parametrize("twin_steps", ["all", "steps 1 and 2"])
async def test_an_invite_copy_that_read_its_key_unused_before_its_twin_used_it_answers_that_battle(
    ledger: Store, monkeypatch: pytest.MonkeyPatch, twin_steps: str
) -> None:
    # The same invite sent twice at once (one key): the second copy reads its key
    # unused, then the first makes the battle (all its steps, or steps 1 and 2 before
    # its worker paused), then the second reads the streams: the opponent is locked,
    # to this very battle. The order four copies took on a loaded machine.
    read_key = ledger.redis.exists
    made: list[tuple[dict[str, Any], bool]] = []

    async def twin(twin_id: str = "bt_0123456789abcdef0123.s1") -> tuple[dict[str, Any], bool]:
        if twin_steps == "all":
            return await battles.invite(ledger, ONE, "s1", "s2", 60, "same")
        await invite_step_one(ledger, twin_id, "same")
        await ledger.run_script("battle_lock", [keys.stream("s2")], [twin_id, "streamer1"])
        return {"battle_id": twin_id}, True

    async def twin_first(*names: str) -> int:
        assert names == (keys.battle_invitation("s1", "same"),)
        found: int = await read_key(*names)
        monkeypatch.undo()  # once: the twin and all after it read Redis as usual
        made.append(await twin())
        return found

    monkeypatch.setattr(ledger.redis, "exists", twin_first)
    again, created = await battles.invite(ledger, ONE, "s1", "s2", 60, "same")
    [(first, first_created)] = made
    assert (first_created, created) == (True, False)
    assert (again["battle_id"], again["status"]) == (first["battle_id"], "invited")
    for stream_id in ("s1", "s2"):
        assert await meta(ledger, stream_id, "battle_lock") == first["battle_id"]
    due = await ledger.redis.zrange(keys.BATTLES_DUE, 0, -1)
    assert due == [first["battle_id"]]  # the id drawn for the copy is not left due
    with pytest.raises(GiftingError) as conflict:  # the same key, not a copy
        await battles.invite(ledger, ONE, "s1", "s2", 61, "same")
    assert conflict.value.code is ErrorCode.IDEMPOTENCY_CONFLICT


@pytest.mark.parametrize("crash_after", ["due entry", "step 4", "step 5", "step 7, one side"])
async def test_a_ticker_takes_a_battle_whose_worker_died_at_each_crash_point_to_its_end(
    ledger: Store, crash_after: str
) -> None:
    await fund(ledger, "alice", "coins_500")
    clock = ledger.clock = MovableClock(ledger)
    ticker = BattleTicker(ledger)
    if crash_after == "due entry":
        await battle_steps.recover_at(ledger, "bt_00000000000000000000.s1")
        clock.ahead = ledger.settings.battles.recover_after_ms
        await ticker.tick()
        assert not await ledger.redis.exists(keys.BATTLES_DUE)
        return
    invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 1, "inv")
    battle_id = invited["battle_id"]
    await battle_steps.recover_at(ledger, battle_id)
    await ledger.run_script(
        "battle_accept",
        [keys.battle(battle_id), keys.stream("s1"), keys.battle_top("s1")],
        [battle_id],
    )
    record = await battle_record.read_known(ledger, battle_id)
    if crash_after != "step 4":
        await ledger.run_script(
            "battle_start_side",
            [keys.stream("s2"), keys.battle_top("s2")],
            [battle_id, record.number("ends_at")],
        )
    await gifts.send_gift(ledger, viewer("alice"), "s1", "rose", 2, "a1")
    if crash_after == "step 7, one side":
        await battle_steps.step(ledger, battle_id, "accepting", "live")
        while True:  # s1's side closes once its clock passed the end; then the worker dies
            closed = await battle_steps.run(
                ledger,
                "battle_close_side",
                [keys.stream("s1"), keys.battle_top("s1")],
                [battle_id, 0, 3],
            )
            if int(closed[0]) == 0:
                break
            await asyncio.sleep(int(closed[1]) / 1000)
    clock.ahead = ledger.settings.battles.recover_after_ms
    for _ in range(600):
        await ticker.tick()
        if (await battle_record.read_known(ledger, battle_id)).status == "ended":
            break
        await asyncio.sleep(0.01)
    ended = await battles.get(ledger, battle_id)
    assert (ended["status"], ended["winner"]) == ("ended", "s1"), ended
    assert [s["points"] for s in ended["sides"]] == [2, 0]
    for stream_id in ("s1", "s2"):
        assert await meta(ledger, stream_id, "battle_lock") is None
        assert await meta(ledger, stream_id, "battle_done") == battle_id
    assert not await ledger.redis.exists(keys.BATTLES_DUE)
    report = await reconcile(ledger.redis, ledger.settings.economy.creator_share_bps)
    assert report.ok, report.problems


@pytest.mark.parametrize("answer", ["decline", "cancel"])
async def test_an_invite_past_its_expiry_is_expired_for_an_answer_even_before_the_ticker_ran(
    ledger: Store, answer: str
) -> None:
    invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 60, "inv")
    battle_id = invited["battle_id"]
    clock = ledger.clock = MovableClock(ledger)
    clock.ahead = ledger.settings.battles.invite_ttl_s * 1000  # no ticker has run yet
    if answer == "decline":  # a closed invite cannot be declined (as after the ticker)
        with pytest.raises(GiftingError) as refused:
            await battles.decline(ledger, TWO, battle_id)
        assert refused.value.code is ErrorCode.BATTLE_CONFLICT
        shown = await battles.get(ledger, battle_id)
    else:  # a cancel answers the battle as it stands: cancelled by its expiry
        shown = await battles.cancel(ledger, ONE, battle_id)
    assert (shown["status"], shown["reason"]) == ("cancelled", "expired")
    for stream_id in ("s1", "s2"):
        assert await meta(ledger, stream_id, "battle_lock") is None


async def test_the_invited_streamer_answering_an_invite_still_being_set_up_is_told_it_is_not_ready(
    ledger: Store,
) -> None:
    battle_id = "bt_0123456789abcdef0123.s1"
    await invite_step_one(ledger, battle_id, "k")  # the inviting worker died after step 2
    await ledger.run_script("battle_lock", [keys.stream("s2")], [battle_id, "streamer1"])
    assert (await streams.stream_status(ledger, "s2"))["battle_id"] == battle_id
    for answer in (battles.accept, battles.decline):
        with pytest.raises(GiftingError) as refused:
            await answer(ledger, TWO, battle_id)  # s2's own streamer: not a stranger
        assert refused.value.code is ErrorCode.BATTLE_CONFLICT, refused.value
        three = Identity("streamer3", "Streamer Three", Role.STREAMER)
        with pytest.raises(GiftingError) as stranger:
            await answer(ledger, three, battle_id)
        assert stranger.value.code is ErrorCode.FORBIDDEN
    assert (await battle_record.read_known(ledger, battle_id)).status == "inviting"


@pytest.fixture
def own_redis(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RedisUnderFault]:
    """A Redis to kill -9 and start again from its append-only file (as
    tests/faults/conftest.py's): this test's own, or the session's whole cluster."""
    if topology.on_cluster():
        request.getfixturevalue("cluster_url")
        cluster = topology.ClusterUnderFault(request.getfixturevalue("redis_cluster"))
        yield cluster
        if not cluster.cluster.running():
            cluster.restart()
        return
    server = RedisProcess(tmp_path / "own-redis")
    server.start()
    yield topology.SingleUnderFault(server)
    server.stop()


async def until_answered(work: Callable[[], Awaitable[T]]) -> T:
    """`work` once the restarted Redis answers it (bounded)."""
    for _ in range(200):
        try:
            return await work()
        except GiftingError as e:
            if e.code is not ErrorCode.SERVICE_UNAVAILABLE:
                raise
        await asyncio.sleep(0.05)
    raise AssertionError("Redis did not come back")


async def test_a_redis_restarted_between_the_steps_of_an_accept_still_ends_the_battle_once(
    settings: Settings, own_redis: RedisUnderFault
) -> None:
    quick = dataclasses.replace(
        settings,
        redis_url=own_redis.url,
        battles=dataclasses.replace(settings.battles, min_duration_s=1),
    )
    store = Store(await connect(own_redis.url, quick.limits.request_timeout_s), quick)
    try:
        for n in (1, 2):
            await live_stream(store, f"s{n}", f"streamer{n}")
        await fund(store, "alice", "coins_500")
        invited, _ = await battles.invite(store, ONE, "s1", "s2", 1, "inv")
        battle_id = invited["battle_id"]
        await battle_steps.recover_at(store, battle_id)
        await store.run_script(  # step 4, then the worker and Redis die
            "battle_accept",
            [keys.battle(battle_id), keys.stream("s1"), keys.battle_top("s1")],
            [battle_id],
        )
        await gifts.send_gift(store, viewer("alice"), "s1", "rose", 3, "a1")
        await asyncio.to_thread(own_redis.kill)
        await asyncio.to_thread(own_redis.restart)
        clock = store.clock = MovableClock(store)
        clock.ahead = quick.battles.recover_after_ms
        ticker = BattleTicker(store)
        for _ in range(600):
            await until_answered(ticker.tick)
            if (await battle_record.read_known(store, battle_id)).status == "ended":
                break
            await asyncio.sleep(0.01)
        ended = await battles.get(store, battle_id)
        assert (ended["status"], ended["winner"]) == ("ended", "s1"), ended
        assert [s["points"] for s in ended["sides"]] == [3, 0]
        for stream_id in ("s1", "s2"):
            rows = await store.redis.xrange(keys.stream_history(stream_id))
            events = [orjson.loads(fields["e"]) for _, fields in rows]
            finals = [e for e in events if e["kind"] == "battle" and e["status"] == "ended"]
            assert len(finals) == 1, finals
        report = await reconcile(store.redis, quick.economy.creator_share_bps)
        assert report.ok, report.problems
    finally:
        await store.close()


async def test_a_battle_whose_end_a_crash_left_unpublished_does_not_hide_the_next_invite(
    ledger: Store,
) -> None:
    old, _ = await battles.invite(ledger, ONE, "s1", "s2", 60, "old")
    old_id = old["battle_id"]
    # s2 declines; the worker dies after the record moved, before step 9
    await battle_steps.recover_at(ledger, old_id)
    await battle_steps.step(ledger, old_id, "inviting,invited", "declined", reason="declined")
    three = Identity("streamer3", "Streamer Three", Role.STREAMER)
    new, created = await battles.invite(ledger, three, "s3", "s2", 60, "new")
    assert created and new["status"] == "invited"
    # once it is due, any worker's ticker finishes the old battle's step 9
    await battle_steps.advance(ledger, await battle_record.read_known(ledger, old_id))
    assert not await ledger.redis.zscore(keys.BATTLES_DUE, old_id)
    for stream_id in ("s2", "s3"):  # what a viewer arriving now is shown: the new invite
        shown = orjson.loads("{" + (await meta(ledger, stream_id, "battle_pub") or "") + "}")
        assert (shown["battle_id"], shown["status"]) == (new["battle_id"], "invited")
    rows = await ledger.redis.xrange(keys.stream_history("s2"))
    events = [orjson.loads(fields["e"]) for _, fields in rows]
    declined = [e for e in events if e["kind"] == "battle" and e["battle_id"] == old_id]
    assert [e["status"] for e in declined] == ["invited", "declined"]  # its end, once
    assert await meta(ledger, "s1", "battle_lock") is None
