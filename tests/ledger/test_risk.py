"""The risk report of `gifting-server reconcile`: income out of line with viewers,
one payer funding many accounts, budgets and the age rule breached. Findings are
warnings: the audit's exit code follows the ledger invariants alone."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gifting_server.config import Settings, load_settings
from gifting_server.ledger import gifts, keys, payments, wallet
from gifting_server.ledger.clock import DAY_MS
from gifting_server.ledger.reconcile import reconcile_main
from gifting_server.ledger.risk import RiskRules, RiskScan, peak_viewers
from gifting_server.ledger.store import Store
from tests.conftest import SECRET, WEBHOOK_SECRET, make_settings
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import journal_entries
from tests.topology import sync_client

T0 = 1_704_283_200_000  # 2024-01-03 12:00 UTC


def gift_entry(user: str, coins: int, at: int = T0, **extra: str) -> dict[str, str]:
    return {
        "type": "gift",
        "user": user,
        "to": "streamer1",
        "stream": "s1",
        "coins": str(coins),
        "at": str(at),
        **extra,
    }


def purchase_entry(user: str, payer: str | None, coins: int = 100) -> dict[str, str]:
    entry = {"type": "purchase", "user": user, "payment": f"p-{user}", "coins": str(coins)}
    return {**entry, "payer": payer} if payer else entry


def scan_of(entries: list[dict[str, str]], rules: RiskRules | None = None) -> RiskScan:
    scan = RiskScan(rules or RiskRules())
    for n, entry in enumerate(entries):
        scan.add(f"{n}-0", entry)
    return scan


async def warnings_of(scan: RiskScan, store: Store) -> list[str]:
    return (await scan.finish(store.redis)).warnings


async def test_a_payer_funding_more_accounts_than_allowed_is_flagged(store: Store) -> None:
    three = [purchase_entry(u, "card-1") for u in ("a", "b", "c")]
    assert await warnings_of(scan_of(three), store) == []
    four = [*three, purchase_entry("d", "card-1"), purchase_entry("e", None)]
    [warning] = await warnings_of(scan_of(four), store)
    assert warning == "payer: card-1 bought 400 coins for 4 accounts (a, b, c, d)"


async def test_gifts_past_the_limit_in_force_are_flagged_once_per_user_and_day(
    store: Store,
) -> None:
    within = [gift_entry("alice", 5, limit="10"), gift_entry("alice", 5, limit="10")]
    assert await warnings_of(scan_of(within), store) == []
    entries = [
        *within,
        gift_entry("alice", 1, limit="10"),  # 11 > 10 on 2024-01-03
        gift_entry("alice", 7, limit="10"),
        gift_entry("alice", 10, at=T0 + DAY_MS, limit="10"),  # a new day, within it
        gift_entry("bob", 50),  # no limit set
    ]
    warnings = await warnings_of(scan_of(entries, RiskRules(coins_per_viewer=1000)), store)
    assert warnings == [
        "budget: alice gave 11 coins on 2024-01-03, past the daily limit of 10 they had set"
    ]


async def test_gifts_without_age_verification_are_flagged_while_the_rule_is_on(
    store: Store,
) -> None:
    entries = [gift_entry("kid", 1, unverified="1"), gift_entry("kid", 1, unverified="1")]
    [warning] = await warnings_of(scan_of(entries), store)
    assert warning.startswith("age rule: kid sent 2 gift(s) without age verification")
    off = RiskRules(require_age_verification=False)
    assert await warnings_of(scan_of(entries, off), store) == []


async def test_income_far_beyond_the_streams_viewers_is_flagged(store: Store) -> None:
    rules = RiskRules(coins_per_viewer=1000)
    entries = [gift_entry("alice", 900), gift_entry("bob", 200)]
    [warning] = await warnings_of(scan_of(entries, rules), store)  # no viewer ever recorded
    assert warning == (
        "income: stream s1 received 1,100 coins from 2 sender(s) (alice, bob) but had at "
        "most 0 viewer(s): over 1,000 per viewer"
    )
    history = keys.stream_history("s1")
    await store.redis.xadd(history, {"e": '{"event_id":1,"kind":"viewers","ts":1,"count":2}'})
    assert await peak_viewers(store.redis, "s1") == 2
    assert await warnings_of(scan_of(entries, rules), store) == []  # 1,100 <= 2 x 1,000


async def test_peak_viewers_counts_the_last_published_count_and_live_presence(
    store: Store,
) -> None:
    assert await peak_viewers(store.redis, "s1") == 0
    await store.redis.hset(keys.stream("s1"), "last_viewers", '"count":3')
    assert await peak_viewers(store.redis, "s1") == 3
    await store.redis.hset(keys.presence("s1"), mapping={"w1": "4|999", "w2": "2|999"})
    assert await peak_viewers(store.redis, "s1") == 6


async def test_broken_entries_are_left_to_the_audit(store: Store) -> None:
    broken = [{"type": "gift", "user": "alice"}, {"type": "purchase", "payer": "x"}]
    assert await warnings_of(scan_of(broken), store) == []


# --- the command ---------------------------------------------------------------------------


@pytest.fixture
def environment(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """What load_settings reads for reconcile_main: the test's Redis and secrets, age rule on."""
    monkeypatch.setenv("GIFTING_REDIS_URL", redis_url)
    monkeypatch.setenv("GIFTING_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("GIFTING_SECRET", SECRET)
    monkeypatch.setenv("GIFTING_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.delenv("GIFTING_CONFIG", raising=False)
    return redis_url


async def test_reconcile_prints_risk_warnings_and_still_exits_0(
    environment: str, settings: Settings, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    no_age_rule = {"require_age_verification": False}
    lax = Store(store.redis, make_settings(environment, settings.data_dir, limits=no_age_rule))
    for user in ("u1", "u2", "u3", "u4"):
        await payments.apply_payment(
            lax, user, f"buy-{user}", "payment.succeeded", "coins_100", payer_id="card-9"
        )
    await fund(lax, "kid")
    await live_stream(lax)
    rose = lax.settings.gift("rose")
    assert rose is not None
    await gifts.run_send_gift(lax, viewer("kid", adult=False), "s1", rose, 3, "k1")
    await wallet.set_daily_limit(lax, "u1", 50)
    await gifts.run_send_gift(lax, viewer("u1"), "s1", rose, 2, "k2")

    fields = await journal_entries(store.redis)
    assert {f.get("payer") for f in fields if f["type"] == "purchase"} == {"card-9", None}
    gift_entries = [f for f in fields if f["type"] == "gift"]
    assert (gift_entries[0].get("unverified"), gift_entries[0].get("limit")) == ("1", None)
    assert (gift_entries[1].get("unverified"), gift_entries[1].get("limit")) == (None, "50")

    assert await asyncio.to_thread(reconcile_main, load_settings(), environment) == 0
    out = capsys.readouterr().out
    assert "ledger reconcile OK" in out
    assert "risk report: 2 warning(s)" in out
    assert "payer: card-9 bought 400 coins for 4 accounts (u1, u2, u3, u4)" in out
    assert "age rule: kid sent 1 gift(s) without age verification" in out

    client = sync_client(environment)
    client.hincrby(keys.wallet("u2"), "coins", 1)  # an invariant broken: exit 1 as before
    client.close()
    assert await asyncio.to_thread(reconcile_main, load_settings(), environment) == 1


async def test_an_honest_quiet_ledger_has_nothing_to_flag(
    environment: str, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    await fund(store, "alice")
    await live_stream(store)
    rose = store.settings.gift("rose")
    assert rose is not None
    await gifts.run_send_gift(store, viewer("alice"), "s1", rose, 5, "k")
    assert await asyncio.to_thread(reconcile_main, load_settings(), environment) == 0
    assert "risk report: nothing to flag" in capsys.readouterr().out
