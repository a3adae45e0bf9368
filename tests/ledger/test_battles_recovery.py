"""A battle cut short between its steps (a worker that died) is taken forward by any
worker's `advance`, and a lock a crash left behind never keeps a stream out of
battles; the audit catches points that are not the journal's."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import orjson
import pytest

from gifting_server.auth import Identity, Role
from gifting_server.config import Settings
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import battle_record, battle_steps, battles, gifts, keys
from gifting_server.ledger.reconcile import reconcile
from gifting_server.ledger.store import Store, connect
from tests.factories import fund, live_stream, viewer

ONE = Identity("streamer1", "Streamer One", Role.STREAMER)
TWO = Identity("streamer2", "Streamer Two", Role.STREAMER)
THREE = Identity("streamer3", "Streamer Three", Role.STREAMER)


class MovableClock:
    """The worker's clock (unix ms), which a test moves past a grace period."""

    def __init__(self, store: Store) -> None:
        self.real = store.clock
        self.ahead = 0

    def __call__(self) -> int:
        return self.real() + self.ahead


@pytest.fixture
async def ledger(settings: Settings) -> AsyncIterator[Store]:
    quick = dataclasses.replace(
        settings, battles=dataclasses.replace(settings.battles, min_duration_s=1)
    )
    assert quick.redis_url
    store = Store(await connect(quick.redis_url, quick.limits.request_timeout_s), quick)
    for n in (1, 2, 3):
        await live_stream(store, f"s{n}", f"streamer{n}")
    yield store
    await store.close()


async def meta(store: Store, stream_id: str, field: str) -> str | None:
    value = await store.redis.hget(keys.stream(stream_id), field)  # type: ignore[misc]
    return None if value is None else str(value)


async def test_an_invite_whose_worker_died_after_its_first_step_is_cancelled_and_frees_both(
    ledger: Store,
) -> None:
    battle_id = "bt_dead1.s1"
    # steps 1 and 2 of an invite, then the worker is gone
    await ledger.run_script(
        "battle_invite",
        [keys.stream("s1"), keys.battle(battle_id), keys.battle_invitation("s1", "k")],
        ["streamer1", battle_id, "s2|60", "s2", 60, ledger.clock(), 60_000, "s1"],
    )
    await ledger.run_script("battle_lock", [keys.stream("s2")], [battle_id, "streamer1"])
    record = await battle_record.read_known(ledger, battle_id)
    assert record.status == "inviting"
    assert (await battles.get(ledger, battle_id))["status"] == "invited"  # as it will be
    # not yet abandoned: left alone
    assert (await battle_steps.advance(ledger, record)).status == "inviting"
    clock = ledger.clock = MovableClock(ledger)
    clock.ahead = ledger.settings.battles.recover_after_ms
    after = await battle_steps.advance(ledger, record)
    assert (after.status, after.fields["reason"]) == ("cancelled", "failed")
    assert await meta(ledger, "s1", "battle_lock") is None
    assert await meta(ledger, "s2", "battle_lock") is None


async def test_a_lock_left_by_a_crash_does_not_keep_a_stream_out_of_battles(
    ledger: Store,
) -> None:
    # s2 locked to a battle that was cancelled, but the release never ran
    stale = "bt_stale.s3"
    await ledger.run_script(
        "battle_invite",
        [keys.stream("s3"), keys.battle(stale), keys.battle_invitation("s3", "k")],
        ["streamer3", stale, "s2|60", "s2", 60, ledger.clock(), 60_000, "s3"],
    )
    await ledger.run_script("battle_lock", [keys.stream("s2")], [stale, "streamer3"])
    await ledger.run_script(
        "battle_step", [keys.battle(stale)], ["inviting", "cancelled", "reason", "failed"]
    )
    invited, created = await battles.invite(ledger, ONE, "s1", "s2", 60, "inv")
    assert created and invited["status"] == "invited"
    assert await meta(ledger, "s2", "battle_lock") == invited["battle_id"]


async def test_an_accept_whose_worker_died_after_the_first_side_started_goes_live(
    ledger: Store,
) -> None:
    invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 60, "inv")
    battle_id = invited["battle_id"]
    # step 4 alone: the inviting side counts, the invited side not yet
    await ledger.run_script(
        "battle_accept",
        [keys.battle(battle_id), keys.stream("s1"), keys.battle_top("s1")],
        [battle_id],
    )
    shown = await battles.get(ledger, battle_id)
    assert shown["status"] == "live" and shown["ends_at"] > 0
    assert await meta(ledger, "s2", "battle") is None
    # a repeated accept (or any worker's ticker) runs the rest
    again = await battles.accept(ledger, TWO, battle_id)
    assert again["status"] == "live" and again["ends_at"] == shown["ends_at"]
    assert (await meta(ledger, "s2", "battle") or "").startswith(battle_id + "|")


async def test_the_inviting_stream_must_be_live_and_the_refusal_writes_nothing(
    ledger: Store,
) -> None:
    await ledger.run_script(
        "end_stream",
        [keys.stream("s1"), keys.stream_history("s1")],
        ["streamer1", ledger.clock(), 100, keys.stream_channel("s1")],
    )
    with pytest.raises(GiftingError) as refused:
        await battles.invite(ledger, ONE, "s1", "s2", 60, "inv")
    assert refused.value.code is ErrorCode.BATTLE_CONFLICT
    assert not await ledger.redis.exists(keys.BATTLES_DUE)
    assert await meta(ledger, "s2", "battle_lock") is None


async def test_equal_points_are_a_draw_and_reconcile_catches_points_not_in_the_journal(
    ledger: Store,
) -> None:
    await fund(ledger, "alice", "coins_500")
    await fund(ledger, "bob", "coins_500")
    invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 1, "inv")
    live = await battles.accept(ledger, TWO, invited["battle_id"])
    await gifts.send_gift(ledger, viewer("alice"), "s1", "finger_heart", 1, "a1")
    await gifts.send_gift(ledger, viewer("bob"), "s2", "rose", 5, "b1")
    battle_id = live["battle_id"]
    ended = None
    for _ in range(400):  # until Redis's clock passed ends_at (each step says what is left)
        record = await battle_steps.advance(
            ledger, await battle_record.read_known(ledger, battle_id)
        )
        if record.status == "ended":
            ended = await battles.get(ledger, battle_id)
            break
        await asyncio.sleep(0.01)
    assert ended is not None
    assert [s["points"] for s in ended["sides"]] == [5, 5]
    assert ended["winner"] is None and ended["reason"] == "time"
    share = ledger.settings.economy.creator_share_bps
    assert (await reconcile(ledger.redis, share)).ok
    # someone with Redis access inflates a side: the audit names the battle
    sides = ended["sides"]
    sides[0]["points"] = 6
    await ledger.redis.hset(keys.battle(battle_id), "final", orjson.dumps(sides).decode())  # type: ignore[misc]
    report = await reconcile(ledger.redis, share)
    assert any(battle_id in problem and "6 points" in problem for problem in report.problems)


async def test_two_invites_racing_for_one_opponent_make_one_battle(ledger: Store) -> None:
    results = await asyncio.gather(
        battles.invite(ledger, ONE, "s1", "s2", 60, "a"),
        battles.invite(ledger, THREE, "s3", "s2", 60, "b"),
        return_exceptions=True,
    )
    won = [r for r in results if not isinstance(r, BaseException)]
    lost = [r for r in results if isinstance(r, GiftingError)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].code is ErrorCode.BATTLE_CONFLICT
    battle_id = won[0][0]["battle_id"]
    assert await meta(ledger, "s2", "battle_lock") == battle_id
    loser = "s3" if battle_id.endswith(".s1") else "s1"
    assert await meta(ledger, loser, "battle_lock") is None  # the loser is free again


async def test_an_accept_racing_a_cancel_leaves_one_outcome(ledger: Store) -> None:
    for round_ in range(6):
        invited, _ = await battles.invite(ledger, ONE, "s1", "s2", 60, f"r{round_}")
        battle_id = invited["battle_id"]
        results = await asyncio.gather(
            battles.accept(ledger, TWO, battle_id),
            battles.cancel(ledger, ONE, battle_id),
            return_exceptions=True,
        )
        final = await battles.get(ledger, battle_id)
        accepted, cancelled = results
        if final["status"] == "live":
            assert isinstance(cancelled, GiftingError), results
            assert cancelled.code is ErrorCode.BATTLE_CONFLICT
            assert not isinstance(accepted, BaseException) and accepted["status"] == "live"
            # end it (a forfeit) so that the next round can start
            await ledger.run_script(
                "end_stream",
                [keys.stream("s2"), keys.stream_history("s2")],
                ["streamer2", ledger.clock(), 100, keys.stream_channel("s2")],
            )
            await battles.stream_ended(ledger, "s2", battle_id)
            await live_stream(ledger, "s2", "streamer2")
        else:
            assert final["status"] == "cancelled", final
            assert isinstance(accepted, GiftingError), results
            assert accepted.code is ErrorCode.BATTLE_CONFLICT
            assert not isinstance(cancelled, BaseException)
        assert await meta(ledger, "s1", "battle_lock") is None
        assert await meta(ledger, "s2", "battle_lock") is None
