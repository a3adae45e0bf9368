"""The ledger audit passes on an honest ledger and names the invariant each tampering breaks."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gifting_server import cli
from gifting_server.config import Gift, Settings, load_settings
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import gifts, keys, payments, wallet
from gifting_server.ledger.journal import fields as journal_fields
from gifting_server.ledger.reconcile import Report, reconcile, reconcile_main
from gifting_server.ledger.store import Store, connect
from tests.conftest import SECRET, WEBHOOK_SECRET, make_settings
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import journal_entries
from tests.redis_process import free_port
from tests.topology import sync_client

Tamper = Callable[[Redis], Awaitable[Any]]


@pytest.fixture
def settings(redis_url: str, tmp_path: Path) -> Settings:
    """Cash-outs allowed at once, so the mixed flow holds every kind of journal entry."""
    return make_settings(
        redis_url, tmp_path, economy={"holding_period_days": 0, "cashout_min_diamonds": 2}
    )


def gift(store: Store, gift_id: str) -> Gift:
    found = store.settings.gift(gift_id)
    assert found is not None
    return found


async def mixed_flow(store: Store) -> None:
    """Purchases, gifts on two streams (one from a streamer), replays, a refund after
    spending that leaves a debt, a purchase that settles it, and a cash-out."""
    await fund(store, "alice", "coins_1000")
    await fund(store, "bob", "coins_100", times=2)
    await fund(store, "tina", "coins_100")
    await live_stream(store, "s1", "tina")
    await live_stream(store, "s2", "tom")
    hearts = gift(store, "hand_hearts")
    await gifts.run_send_gift(store, viewer("alice"), "s1", hearts, 3, "a1")
    replay = await gifts.run_send_gift(store, viewer("alice"), "s1", hearts, 3, "a1")
    assert replay.replayed
    await gifts.run_send_gift(store, viewer("alice"), "s2", gift(store, "rose"), 7, "a2")
    await gifts.run_send_gift(store, viewer("bob"), "s1", gift(store, "finger_heart"), 5, "b1")
    await gifts.run_send_gift(store, viewer("bob"), "s2", gift(store, "rose"), 1, "b2")
    await gifts.run_send_gift(store, viewer("tina"), "s2", gift(store, "finger_heart"), 2, "t1")
    for event in ("refund-b1", "refund-b2"):
        await payments.apply_payment(store, "bob", event, "payment.refunded", "coins_100")
    assert (await wallet.read_wallet(store, "bob"))["owed"] == 26
    settle = await payments.apply_payment(store, "bob", "buy-b", "payment.succeeded", "coins_500")
    assert (settle.credited, settle.owed) == (474, 0)
    again = await payments.apply_payment(store, "bob", "buy-b", "payment.succeeded", "coins_500")
    assert again.replayed
    await wallet.cashout(store, "tina", 100, "c1")


async def audit(store: Store) -> Report:
    return await reconcile(store.redis, store.settings.economy.creator_share_bps)


async def test_empty_ledger_is_ok(store: Store) -> None:
    report = await audit(store)
    assert report.ok, report.format()
    assert report.entries == 0
    assert "OK" in report.format()


async def test_mixed_flow_reconciles_with_exact_totals(store: Store) -> None:
    await mixed_flow(store)
    report = await audit(store)
    assert report.ok, report.format()
    assert report.entries == 13  # 5 purchases, 5 gifts, 2 refunds, 1 cash-out; replays add none
    coins, diamonds, owed = (report.totals[c] for c in ("coins", "diamonds", "owed"))
    assert (coins.minted, coins.burned, coins.outstanding) == (1800, 371, 1429)
    assert (diamonds.minted, diamonds.burned, diamonds.outstanding) == (171, 100, 71)
    assert (owed.minted, owed.burned, owed.outstanding) == (26, 26, 0)
    assert report.wallets == 4
    text = report.format()
    assert "OK" in text and "1,429" in text


async def test_chunked_replay_matches_one_read(store: Store) -> None:
    await mixed_flow(store)
    seen: list[int] = []
    chunked = await reconcile(store.redis, 5000, chunk=5, progress=seen.append)
    whole = await audit(store)
    assert chunked.ok, chunked.format()
    assert (chunked.entries, chunked.totals) == (whole.entries, whole.totals)
    assert seen == [5, 10, 13]


async def move_to_the_legacy_journal(r: Redis) -> None:
    """Make the ledger look as it was written before the journal was split per user:
    every entry in `{ledger}:journal` (in entry-id order), every platform share in
    `{ledger}:platform`."""
    entries = await journal_entries(r)
    for journal in [k async for k in r.scan_iter(match=keys.JOURNAL_PATTERN)]:
        await r.delete(journal)
    for fields in entries:
        await r.xadd(keys.LEGACY_JOURNAL, fields)  # type: ignore[arg-type]
    for account in [k async for k in r.scan_iter(match=keys.PLATFORM_PATTERN)]:
        await r.hincrby(keys.LEGACY_PLATFORM_ACCOUNT, "coins", int(await r.hget(account, "coins")))
        await r.delete(account)


async def test_a_ledger_journaled_before_the_split_reconciles_and_goes_on(store: Store) -> None:
    await mixed_flow(store)
    whole = await audit(store)
    await move_to_the_legacy_journal(store.redis)
    legacy = await reconcile(store.redis, 5000, chunk=3)
    assert legacy.ok, legacy.format()
    assert (legacy.entries, legacy.totals) == (whole.entries, whole.totals)
    # gifts after the split: tina's creator share goes on from what she received before
    rose = gift(store, "rose")
    for i in range(3):
        await gifts.run_send_gift(store, viewer("alice"), "s1", rose, 1, f"after-{i}")
    assert await store.redis.xlen(keys.journal("tina")) == 3
    report = await reconcile(store.redis, 5000, chunk=2)
    assert report.ok, report.format()
    assert report.entries == whole.entries + 3


async def test_share_defaults_to_the_configured_one(
    store: Store, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("GIFTING_DATA_DIR", str(tmp_path))
    await mixed_flow(store)
    configured = load_settings().economy.creator_share_bps
    assert (await reconcile(store.redis, configured)).ok


def with_share(store: Store, share_bps: int) -> Store:
    """The same ledger, served with another `creator_share_bps` (the README's example)."""
    base = store.settings
    economy = {"holding_period_days": 0, "cashout_min_diamonds": 2, "creator_share_bps": share_bps}
    return Store(store.redis, make_settings(str(base.redis_url), base.data_dir, economy=economy))


async def share_change_flow(store: Store) -> Store:
    """Gifts at 50%, then the operator moves streamers to 60% and 33.33%, and more gifts."""
    await mixed_flow(store)
    for share, key in ((6000, "after"), (3333, "later")):
        changed = with_share(store, share)
        await gifts.run_send_gift(
            changed, viewer("alice"), "s1", gift(changed, "rose"), 7, key + "1"
        )
        await gifts.run_send_gift(
            changed, viewer("alice"), "s2", gift(changed, "hand_hearts"), 1, key + "2"
        )
    return changed


@pytest.mark.parametrize("configured", [5000, 6000, 3333])
async def test_a_change_of_the_creator_share_reconciles_under_any_configured_share(
    store: Store, configured: int
) -> None:
    await share_change_flow(store)
    shares = {e.get("share") for e in await journal_entries(store.redis) if e["type"] == "gift"}
    assert shares == {"5000", "6000", "3333"}
    report = await reconcile(store.redis, configured)
    assert report.ok, report.format()


async def test_after_a_share_change_a_gift_credited_off_its_share_still_fails(
    store: Store,
) -> None:
    await share_change_flow(store)
    # 10 coins to tina, who received 339: 6000 bps gives 6 diamonds, not 5
    await store.redis.xadd(
        keys.journal("tina"),
        {"type": "gift", "user": "alice", "to": "tina", "stream": "s1", "coins": 10,
         "diamonds": 5, "platform": 5, "share": 6000},
    )  # fmt: skip
    report = await reconcile(store.redis, 6000)
    assert "creator share: gift" in report.format(), report.format()
    assert "to tina credits 5 diamonds for 10 coins; at 6000 bps after 339 coins" in (
        report.format()
    )


async def test_after_a_share_change_a_tampered_balance_still_fails(store: Store) -> None:
    await share_change_flow(store)
    await store.redis.hincrby(keys.wallet("tina"), "diamonds", 1)
    report = await reconcile(store.redis, 3333)
    assert "balance replay: wallet tina holds diamonds" in report.format(), report.format()


def test_reconcile_command_passes_after_the_share_in_the_config_changed(
    environment: str, settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    async def run() -> None:
        client = await connect(environment, 5.0)
        try:
            await share_change_flow(Store(client, settings))
        finally:
            await client.aclose()

    asyncio.run(run())
    overlay = tmp_path / "share.toml"
    overlay.write_text("[economy]\ncreator_share_bps = 3333\n")
    monkeypatch.setenv("GIFTING_CONFIG", str(overlay))
    assert reconcile_main(load_settings(), environment) == 0, capsys.readouterr().out


async def test_a_payment_event_repeated_for_another_user_changes_nothing(store: Store) -> None:
    """CONTRACT: "A repeated `event_id` changes nothing", whichever user it names."""
    await payments.apply_payment(store, "alice", "evt-1", "payment.succeeded", "coins_100")
    try:
        again = await payments.apply_payment(
            store, "bob", "evt-1", "payment.succeeded", "coins_100"
        )
    except GiftingError as e:
        assert e.code is ErrorCode.IDEMPOTENCY_CONFLICT
    else:
        assert again.credited == 0
    assert (await wallet.read_wallet(store, "bob"))["coins"] == 0
    report = await audit(store)
    assert report.ok, report.format()


async def _delete_first_gift(r: Redis) -> None:
    entries: list[Any] = await r.xrange(keys.journal("tina")) or []
    entry_id = next(i for i, fields in entries if journal_fields(fields)["type"] == "gift")
    await r.xdel(keys.journal("tina"), entry_id)


async def _forge_gift(r: Redis, coins: int, diamonds: int, platform: int) -> None:
    fields: dict[Any, Any] = {"type": "gift", "user": "alice", "to": "tina", "stream": "s1"}
    fields |= {"coins": coins, "diamonds": diamonds, "platform": platform}
    await r.xadd(keys.journal("tina"), fields)


async def _forge_purchase(r: Redis) -> None:
    fields: dict[Any, Any] = {"type": "purchase", "user": "bob", "payment": "buy-b"}
    fields |= {"coins": 500, "settled": 0}
    await r.xadd(keys.journal("bob"), fields)


TAMPERINGS: list[tuple[str, Tamper, list[str]]] = [
    (
        "wallet coins changed",
        lambda r: r.hincrby(keys.wallet("alice"), "coins", 5),
        ["balance replay: wallet alice holds coins 698", "conservation: coins"],
    ),
    (
        "diamond balance changed",
        lambda r: r.hincrby(keys.wallet("tina"), "diamonds", -2),
        ["balance replay: wallet tina holds diamonds", "conservation: diamonds"],
    ),
    (
        "owed debt changed",
        lambda r: r.hset(keys.wallet("bob"), "owed", 3),
        ["balance replay: wallet bob holds owed", "conservation: owed"],
    ),
    (
        "received changed",
        lambda r: r.hincrby(keys.wallet("tina"), "received", 1),
        ["balance replay: wallet tina holds received"],
    ),
    (
        "platform account changed",
        lambda r: r.hincrby(keys.platform_account("tina"), "coins", -1),
        ["balance replay: platform account {u:tina}:platform", "conservation: coins"],
    ),
    (
        "platform share credited to the legacy account",
        lambda r: r.hincrby(keys.LEGACY_PLATFORM_ACCOUNT, "coins", 1),
        ["balance replay: platform account {ledger}:platform holds coins 1", "conservation"],
    ),
    (
        "journal gift entry deleted",
        _delete_first_gift,
        ["conservation: coins", "balance replay: wallet alice", "leaderboard: {s:s1}:lb"],
    ),
    (
        "negative balance",
        lambda r: r.hset(keys.wallet("bob"), "coins", -5),
        ["negative balance: wallet bob holds coins -5"],
    ),
    (
        "stream leaderboard score changed",
        lambda r: r.zincrby(keys.stream_leaderboard("s1"), 10, "alice"),
        ["leaderboard: {s:s1}:lb gives alice 310"],
    ),
    (
        "all-time leaderboard member added",
        lambda r: r.zadd(keys.channel_leaderboard("tom", "all"), {"mallory": 1}),
        ["leaderboard: {u:tom}:lb:all gives mallory"],
    ),
    (
        "payment record missing",
        lambda r: r.delete(keys.payment_seen("buy-b")),
        ["payment: {ledger}:payment:buy-b is missing"],
    ),
    (
        "payment record without journal entry",
        lambda r: r.set(keys.payment_seen("ghost"), "carol|payment.succeeded|coins_100|1|1|0|0"),
        ["payment: {ledger}:payment:ghost has no entry"],
    ),
    (
        "payment credited twice",
        _forge_purchase,
        ["payment: event buy-b is in the journal 2 times", "balance replay: wallet bob"],
    ),
    (
        "gift missing its platform leg",
        lambda r: _forge_gift(r, 10, 5, 0),
        ["gift legs: gift", "conservation: coins"],
    ),
    (
        "gift credited over the creator share",
        lambda r: _forge_gift(r, 10, 10, 0),
        ["creator share: gift", "to tina credits 10 diamonds for 10 coins; at 5000 bps"],
    ),
    (
        "unknown journal entry",
        lambda r: r.xadd(keys.journal("alice"), {"type": "bonus", "user": "alice"}),
        ["journal: entry", "unknown type 'bonus'"],
    ),
    (
        "malformed journal entry",
        lambda r: r.xadd(
            keys.journal("tina"), {"type": "cashout", "user": "tina", "diamonds": "x"}
        ),
        ["journal: entry", "(cashout) lacks a field or an integer"],
    ),
    (
        "compact gift entry cut short",
        lambda r: r.xadd(keys.journal("tina"), {"g": "alice|tina|s1|rose|1|1"}),
        ["journal: entry {u:tina}:journal", "(gift) lacks a field or an integer"],
    ),
    (
        "entry in another user's journal",
        lambda r: r.xadd(keys.journal("alice"), {"type": "cashout", "user": "tina", "diamonds": 0}),
        ["journal: entry {u:alice}:journal", "(cashout) belongs to 'tina'"],
    ),
    (
        "journal of the wrong type",
        lambda r: r.set(keys.journal("zed"), "oops"),
        ["storage: {u:zed}:journal cannot be read"],
    ),
    (
        "leaderboard of the wrong type",
        lambda r: r.set(keys.stream_leaderboard("s2"), "oops"),
        ["storage: {s:s2}:lb cannot be read"],
    ),
]


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [pytest.param(t, e, id=name) for name, t, e in TAMPERINGS],
)
async def test_tampering_fails_and_names_the_invariant(
    store: Store, tamper: Tamper, expected: list[str]
) -> None:
    await mixed_flow(store)
    assert (await audit(store)).ok
    await tamper(store.redis)
    report = await audit(store)
    assert not report.ok
    text = report.format()
    assert "FAILED" in text
    for fragment in expected:
        assert fragment in text, text


async def test_payments_applied_across_slots_reconcile(store: Store) -> None:
    store.payments_across_slots = True
    await mixed_flow(store)
    assert await store.redis.exists(keys.user_payment("bob", "buy-b"))
    report = await audit(store)
    assert report.ok, report.format()
    assert report.pending_payments == []


async def test_a_claimed_payment_not_yet_applied_is_pending_not_a_problem(store: Store) -> None:
    """A crash between the claim and the credit on a cluster: no coin moved, and the
    provider's retry finishes it. The audit lists it and passes."""
    await mixed_flow(store)
    await store.run_script(
        "claim_payment", [keys.payment_seen("ev9")], ["carol|payment.succeeded|coins_100"]
    )
    report = await audit(store)
    assert report.ok, report.format()
    assert report.pending_payments == [keys.payment_seen("ev9")]
    assert "1 payment(s) claimed, not applied" in report.format()


async def test_a_users_payment_record_without_its_journal_entry_fails(store: Store) -> None:
    store.payments_across_slots = True
    await mixed_flow(store)
    await store.redis.set(keys.user_payment("carol", "buy-b"), "carol|x|coins_100|1|1|0|0")
    report = await audit(store)
    assert "payment: {u:carol}:payment:buy-b has no entry in carol's journal" in report.format()


def seed(settings: Settings) -> None:
    async def run() -> None:
        assert settings.redis_url
        client = await connect(settings.redis_url, 5.0)
        try:
            await mixed_flow(Store(client, settings))
        finally:
            await client.aclose()

    asyncio.run(run())


@pytest.fixture
def environment(monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path) -> str:
    """What `gifting-server reconcile` reads (load_settings): the test Redis, secrets and a
    private data dir."""
    monkeypatch.setenv("GIFTING_REDIS_URL", redis_url)
    monkeypatch.setenv("GIFTING_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GIFTING_SECRET", SECRET)
    monkeypatch.setenv("GIFTING_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.delenv("GIFTING_CONFIG", raising=False)
    return redis_url


def test_reconcile_main_exits_0_then_1(
    environment: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(settings)
    assert reconcile_main(load_settings(), environment) == 0
    assert "ledger reconcile OK" in capsys.readouterr().out
    client = sync_client(environment)
    client.hincrby(keys.wallet("alice"), "coins", 1)
    client.close()
    assert reconcile_main(load_settings(), environment) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "balance replay: wallet alice" in out


def test_cli_reconcile_command(
    environment: str, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(settings)
    assert cli.main(["reconcile"]) == 0
    assert "ledger reconcile OK" in capsys.readouterr().out


def test_reconcile_main_without_redis_exits_2(
    environment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert reconcile_main(load_settings(), f"redis://127.0.0.1:{free_port()}/0") == 2
    assert "unreachable" in capsys.readouterr().err
