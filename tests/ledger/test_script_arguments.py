"""No script can fail after its first write: a bad argument (a configuration out of
range) or a stored number that does not parse is refused with a named code before
anything is written, and a stream history ahead of its meta fails the first write.

Each script is called directly, over a ledger where the call would otherwise go on to
write, and the whole database is compared before and after."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gifting_server.config import Settings
from gifting_server.errors import ErrorCode, GiftingError, ScriptCode
from gifting_server.ledger import gifts, keys, streams, wallet
from gifting_server.ledger.clock import DAY_MS
from gifting_server.ledger.store import Store
from tests.conftest import ServerThread, make_settings
from tests.factories import auth, fund, live_stream, viewer
from tests.ledger.conftest import one_script_only
from tests.ledger.support import FakeClock, assert_refused, snapshot
from tests.topology import on_cluster

T0 = 1_704_283_200_000  # 2024-01-03 12:00 UTC
# What Redis refuses for a length cap (XADD MAXLEN) or stores as no integer, and what
# is no number at all; a TTL (SET PX) must be 1 or more as well.
BAD_NUMBERS = ["-1", "1e3", "0x10", "12abc", "", str(2**64), str(10**30)]
BAD_TTLS = ["0", *BAD_NUMBERS]
# A time, a period or an amount only has to be an integer in range.
BAD_TIMES = ["-1", "1.5", "12abc", "", "inf", "nan", str(2**64), str(10**30)]
Call = tuple[str, list[str], list[Any]]
# The one script of a gift and of a payment, whose keys span several slots: a cluster
# runs the steps across slots instead (tests/ledger/test_transfers.py).
ONE_REDIS_SCRIPTS = {"send_gift", "recharge"}


def runs_here(script: str) -> None:
    if on_cluster() and script in ONE_REDIS_SCRIPTS:
        pytest.skip(f"single Redis only: {script} is the one-script path; a cluster takes steps")


@pytest.fixture
async def ledger(store: Store) -> Store:
    """A ledger where every script has work to do: alice holds coins and has gifted on
    the live stream s1 of streamer1 (an open streak), streamer1 has released diamonds."""
    store.clock = FakeClock(T0)
    await fund(store, "alice", "coins_50000")
    await live_stream(store)
    rose = store.settings.gift("rose")
    assert rose is not None
    await gifts.run_send_gift(store, viewer("alice"), "s1", rose, 10, "first")
    await gifts.run_send_gift(store, viewer("alice"), "s1", rose, 4000, "earn")
    store.clock = FakeClock(T0 + 8 * DAY_MS)
    return store


def gift(store: Store, **replace: str) -> Call:
    rose = store.settings.gift("rose")
    assert rose is not None
    call = gifts.gift_call(
        store.settings, viewer("alice"), "s1", "streamer1", rose, 1, "again", store.clock()
    )
    args = [str(a) for a in call.args]
    positions = {"ttl": 14, "history": 15, "now": 7, "share": 10, "held_until": 20, "coins": 5}
    for name, value in replace.items():
        args[positions[name]] = value
    return "send_gift", call.keys, args


def cashout(store: Store, **replace: str) -> Call:
    now = store.clock()
    names = ["user", "diamonds", "cents", "fingerprint", "now", "minimum", "cap", "hold", "ttl"]
    values = ["streamer1", "2000", "1000", "cashout|2000", str(now), "2000", "100000",
              str(7 * DAY_MS), "86400000", "co_1", "USD", "co-key"]  # fmt: skip
    for name, value in replace.items():
        values[names.index(name)] = value
    keys_ = [keys.idempotency("streamer1", "co-key"), keys.wallet("streamer1"),
             keys.earnings_by_day("streamer1"), keys.cashouts("streamer1"),
             keys.journal("streamer1"), keys.held_diamonds("streamer1")]  # fmt: skip
    return "cashout", keys_, values


def complete_cashout(store: Store, **replace: str) -> Call:
    """Over the cash-out `cashout` makes (run it first for a call that goes through)."""
    names, values = ["user", "cashout", "status", "now"], ["streamer1", "co_1", "failed", "1"]
    values[3] = str(store.clock())
    for name, value in replace.items():
        values[names.index(name)] = value
    keys_ = [keys.cashouts("streamer1"), keys.wallet("streamer1"), keys.journal("streamer1")]
    return "complete_cashout", keys_, values


def recharge(store: Store, **replace: str) -> Call:
    names = ["user", "event", "kind", "package", "coins", "fingerprint", "now", "payer"]
    values = ["alice", "evt-x", "payment.succeeded", "coins_100", "100",
              "alice|payment.succeeded|coins_100", str(store.clock()), ""]  # fmt: skip
    for name, value in replace.items():
        values[names.index(name)] = value
    keys_ = [keys.payment_seen("evt-x"), keys.wallet("alice"), keys.purchases("alice"),
             keys.journal("alice")]  # fmt: skip
    return "recharge", keys_, values


def history_call(script: str, store: Store, **replace: str) -> Call:
    """end_stream, rotate_overlay_tokens, publish_state or close_streaks on s1."""
    now, channel = str(store.clock()), store.event_channel("s1")
    if script in ("end_stream", "rotate_overlay_tokens"):
        names, values = (
            ["streamer", "now", "history", "channel"],
            ["streamer1", now, "1000", channel],
        )
        keys_ = [keys.stream("s1"), keys.stream_history("s1")]
    elif script == "publish_state":
        names = ["field", "state", "kind", "now", "history", "channel"]
        values = ["last_viewers", '"count":3', "viewers", now, "1000", channel]
        keys_ = [keys.stream("s1"), keys.stream_history("s1")]
    else:
        names = ["now", "window", "history", "channel", "batch"]
        values = [now, "3000", "1000", channel, "100"]
        keys_ = [keys.open_streaks("s1"), keys.stream("s1"), keys.stream_history("s1")]
    for name, value in replace.items():
        values[names.index(name)] = value
    return script, keys_, values


BAD_CALLS: dict[str, Callable[[Store], Call]] = {}
for bad in BAD_TTLS:
    BAD_CALLS[f"send_gift ttl {bad!r}"] = lambda s, bad=bad: gift(s, ttl=bad)
    BAD_CALLS[f"cashout ttl {bad!r}"] = lambda s, bad=bad: cashout(s, ttl=bad)
for bad in BAD_NUMBERS:
    BAD_CALLS[f"send_gift history cap {bad!r}"] = lambda s, bad=bad: gift(s, history=bad)
    for script in ("end_stream", "rotate_overlay_tokens", "publish_state", "close_streaks"):
        BAD_CALLS[f"{script} history cap {bad!r}"] = lambda s, bad=bad, script=script: history_call(
            script, s, history=bad
        )
for bad in BAD_TIMES:
    BAD_CALLS[f"send_gift now {bad!r}"] = lambda s, bad=bad: gift(s, now=bad)
    BAD_CALLS[f"send_gift held until {bad!r}"] = lambda s, bad=bad: gift(s, held_until=bad)
    BAD_CALLS[f"cashout now {bad!r}"] = lambda s, bad=bad: cashout(s, now=bad)
    BAD_CALLS[f"cashout hold {bad!r}"] = lambda s, bad=bad: cashout(s, hold=bad)
    BAD_CALLS[f"recharge coins {bad!r}"] = lambda s, bad=bad: recharge(s, coins=bad)
    BAD_CALLS[f"recharge now {bad!r}"] = lambda s, bad=bad: recharge(s, now=bad)
    BAD_CALLS[f"close_streaks window {bad!r}"] = lambda s, bad=bad: history_call(
        "close_streaks", s, window=bad
    )
for bad in (" 5", "0x10", "1e3", "-5", "5.5", str(10**30)):
    BAD_CALLS[f"send_gift coins {bad!r}"] = lambda s, bad=bad: gift(s, coins=bad)
for bad in BAD_NUMBERS:
    BAD_CALLS[f"rotate_overlay_tokens now {bad!r}"] = lambda s, bad=bad: history_call(
        "rotate_overlay_tokens", s, now=bad
    )
    BAD_CALLS[f"complete_cashout now {bad!r}"] = lambda s, bad=bad: complete_cashout(s, now=bad)
for bad in ("", "PAID", "pending", "refunded"):
    BAD_CALLS[f"complete_cashout status {bad!r}"] = lambda s, bad=bad: complete_cashout(
        s, status=bad
    )
BAD_CALLS["send_gift share 10001"] = lambda s: gift(s, share="10001")
BAD_CALLS["send_gift share -1"] = lambda s: gift(s, share="-1")
BAD_CALLS["recharge unknown kind"] = lambda s: recharge(s, kind="payment.bonus")
BAD_CALLS["claim_payment empty fingerprint"] = lambda s: (
    "claim_payment", [keys.payment_seen("evt-x")], [""]
)  # fmt: skip


def mark_applied(store: Store, **replace: str) -> Call:
    names = ["fingerprint", "coins", "credited", "clawed", "owed"]
    values = ["alice|payment.succeeded|coins_100", "100", "100", "0", "0"]
    for name, value in replace.items():
        values[names.index(name)] = value
    return "mark_payment_applied", [keys.payment_seen("evt-x")], values


for bad in BAD_NUMBERS:
    for amount in ("coins", "credited", "clawed", "owed"):
        BAD_CALLS[f"mark_payment_applied {amount} {bad!r}"] = lambda s, bad=bad, amount=amount: (
            mark_applied(s, **{amount: bad})
        )
BAD_CALLS["start_stream now 'soon'"] = lambda s: (
    "start_stream",
    [keys.stream("s2"), keys.stream_history("s2")],
    ["streamer1", "soon"],
)
for bad in ("lots", "-5", "1e3", str(10**30)):
    BAD_CALLS[f"set_daily_limit {bad!r}"] = lambda s, bad=bad: (
        "set_daily_limit",
        [keys.wallet("alice")],
        [bad],
    )


@pytest.mark.parametrize("bad_call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
async def test_a_script_refuses_a_bad_argument_before_writing_anything(
    ledger: Store, bad_call: Callable[[Store], Call]
) -> None:
    name, script_keys, args = bad_call(ledger)
    runs_here(name)
    before = await snapshot(ledger.redis)
    result = await ledger.scripts.run(name, script_keys, args)
    assert result == [ScriptCode.INVALID_ARGUMENT]
    assert await snapshot(ledger.redis) == before


async def test_the_good_calls_of_this_module_go_through(ledger: Store) -> None:
    """The builders above call each script correctly: only the bad value refuses."""
    for name, script_keys, args in [
        gift(ledger), cashout(ledger), complete_cashout(ledger), recharge(ledger),
        mark_applied(ledger),
        *(history_call(s, ledger) for s in ("close_streaks", "publish_state",
                                             "rotate_overlay_tokens", "end_stream")),
    ]:  # fmt: skip
        if on_cluster() and name in ONE_REDIS_SCRIPTS:
            continue
        assert (await ledger.scripts.run(name, script_keys, args))[0] == 0, name


# --- a gift or cash-out can never be charged twice by a TTL Redis refuses -------------


@pytest.mark.parametrize("ttl_s", [0, -1, 10**16])
async def test_a_gift_with_an_idempotency_ttl_redis_refuses_charges_nothing_however_often(
    ledger: Store, ttl_s: int
) -> None:
    base = ledger.settings
    broken = make_settings(str(base.redis_url), base.data_dir, limits={"idempotency_ttl_s": ttl_s})
    store = Store(ledger.redis, broken, clock=ledger.clock)
    rose = broken.gift("rose")
    assert rose is not None
    for _ in range(3):  # the client retries with the same key
        refused = gifts.run_send_gift(store, viewer("alice"), "s1", rose, 1, "retried")
        await assert_refused(store, ErrorCode.INTERNAL_ERROR, refused)
        cashed = wallet.cashout(store, "streamer1", 2000, "retried")
        await assert_refused(store, ErrorCode.INTERNAL_ERROR, cashed)


async def test_over_http_a_huge_idempotency_ttl_answers_an_error_and_charges_nothing(
    ledger: Store, tmp_path: Path
) -> None:
    settings: Settings = make_settings(
        str(ledger.settings.redis_url), tmp_path, limits={"idempotency_ttl_s": 10**16}
    )
    before = await snapshot(ledger.redis)
    body = {"gift_id": "rose", "count": 1, "idempotency_key": "http-retried"}
    with ServerThread(settings) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
            for _ in range(3):
                answer = await client.post("/v1/streams/s1/gifts", json=body, headers=auth("alice"))
                assert answer.status_code == 500
                assert answer.json()["error"]["code"] == "internal_error"
                assert "nothing was changed" in answer.json()["error"]["message"]
    assert await snapshot(ledger.redis) == before


# --- stored numbers that do not parse ------------------------------------------------------

CORRUPTIONS = {
    "stream seq": (lambda s: keys.stream("s1"), "seq"),
    "stream coins": (lambda s: keys.stream("s1"), "coins"),
    "combo": (lambda s: keys.stream("s1"), keys.combo_field("alice", "finger_heart")),
    "viewer coins": (lambda s: keys.wallet("alice"), "coins"),
    "viewer spent": (lambda s: keys.wallet("alice"), "spent"),
    "viewer rate bucket": (lambda s: keys.wallet("alice"), "rl_tokens"),
    "streamer received": (lambda s: keys.wallet("streamer1"), "received"),
    "streamer diamonds": (lambda s: keys.wallet("streamer1"), "diamonds"),
    "platform coins": (lambda s: keys.platform_account("streamer1"), "coins"),
}


@pytest.mark.parametrize("where", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
async def test_a_gift_over_a_stored_number_that_does_not_parse_changes_nothing(
    ledger: Store, where: tuple[Callable[[Store], str], str]
) -> None:
    key, field = where
    if not key(ledger).startswith("{u:alice}"):
        one_script_only(ledger, "across slots, only the sender's slot is checked before the "
                        "debit: tests/ledger/test_transfers.py")  # fmt: skip
    await ledger.redis.hset(key(ledger), field, "1.5e" if field != "coins" else "x12")
    hearts = ledger.settings.gift("finger_heart")  # diamonds and a platform share
    assert hearts is not None
    refused = gifts.run_send_gift(ledger, viewer("alice"), "s1", hearts, 1, "again")
    await assert_refused(ledger, ErrorCode.STORAGE_CORRUPT, refused)


async def test_a_cashout_over_a_held_bucket_that_does_not_parse_changes_nothing(
    ledger: Store,
) -> None:
    await ledger.redis.hset(keys.held_diamonds("streamer1"), "soon", "5")
    refused = wallet.cashout(ledger, "streamer1", 2000, "co")
    await assert_refused(ledger, ErrorCode.STORAGE_CORRUPT, refused)


# --- a history ahead of its stream meta (e.g. the meta restored from an older backup) ------


async def rewind_meta(store: Store) -> None:
    """The meta's seq falls behind the history, whose ids must only grow."""
    await store.redis.hset(keys.stream("s1"), "seq", "0")


async def test_a_gift_over_a_history_ahead_of_its_meta_changes_nothing(ledger: Store) -> None:
    one_script_only(ledger, "across slots, the history is written after the debit: "
                    "tests/ledger/test_transfers.py")  # fmt: skip
    await rewind_meta(ledger)
    rose = ledger.settings.gift("rose")
    assert rose is not None
    refused = gifts.run_send_gift(ledger, viewer("alice"), "s1", rose, 1, "again")
    await assert_refused(ledger, ErrorCode.STORAGE_CORRUPT, refused)


async def test_ending_a_stream_over_a_history_ahead_of_its_meta_changes_nothing(
    ledger: Store,
) -> None:
    await rewind_meta(ledger)
    await assert_refused(
        ledger, ErrorCode.STORAGE_CORRUPT, streams.end_stream(ledger, "streamer1", "s1")
    )


@pytest.mark.parametrize("script", ["publish_state", "close_streaks", "rotate_overlay_tokens"])
async def test_a_sweep_over_a_history_ahead_of_its_meta_changes_nothing(
    ledger: Store, script: str
) -> None:
    await rewind_meta(ledger)
    name, script_keys, args = history_call(script, ledger)
    before = await snapshot(ledger.redis)
    with pytest.raises(GiftingError) as refused:
        await ledger.run_script(name, script_keys, args)
    assert refused.value.code is ErrorCode.STORAGE_CORRUPT
    assert await snapshot(ledger.redis) == before
