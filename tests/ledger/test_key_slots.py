"""No global hot key: a money script writes only keys of the users and the stream it
is about, so gifts between disjoint users touch disjoint keys (docs/scaling.md,
"The ledger across slots"). Checked on a real Redis: every key's content before and
after each call."""

from __future__ import annotations

import re

from redis.crc import key_slot

from gifting_server.ledger import gifts, keys, payments, wallet
from gifting_server.ledger.store import Store
from tests.conftest import make_settings
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import snapshot

TAG = re.compile(r"^\{([^}]*)\}")


async def written_by(store: Store, call: object) -> set[str]:
    """The keys whose content a call changed, created or removed."""
    before = await snapshot(store.redis)
    await call  # type: ignore[misc]
    after = await snapshot(store.redis)
    return {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}


def tags(written: set[str]) -> set[str]:
    found = set()
    for key in written:
        tag = TAG.match(key)
        assert tag, f"{key} carries no hash tag"
        found.add(tag[1])
    return found


async def test_gifts_between_disjoint_users_write_disjoint_keys(store: Store) -> None:
    await fund(store, "alice")
    await fund(store, "bob")
    await live_stream(store, "s1", "tina")
    await live_stream(store, "s2", "tom")
    hearts = store.settings.gift("hand_hearts")
    assert hearts is not None

    first = await written_by(
        store, gifts.run_send_gift(store, viewer("alice"), "s1", hearts, 1, "k")
    )
    second = await written_by(
        store, gifts.run_send_gift(store, viewer("bob"), "s2", hearts, 1, "k")
    )

    assert first and second
    assert first.isdisjoint(second), first & second
    assert tags(first) == {"u:alice", "u:tina", "s:s1"}
    assert tags(second) == {"u:bob", "u:tom", "s:s2"}
    # the journal entry and the platform share went to the streamer's slot
    assert {keys.journal("tina"), keys.platform_account("tina")} <= first
    assert not await store.redis.exists(keys.LEGACY_JOURNAL, keys.LEGACY_PLATFORM_ACCOUNT)


async def test_every_key_a_gift_script_is_given_lies_in_its_users_and_streams_slots(
    store: Store,
) -> None:
    """What the script may read as well as write: its KEYS, slot by slot."""
    await live_stream(store, "s1", "tina")
    rose = store.settings.gift("rose")
    assert rose is not None
    call = gifts.gift_call(store.settings, viewer("alice"), "s1", "tina", rose, 1, "k", 0)
    allowed = {key_slot(tag.encode()) for tag in ("u:alice", "u:tina", "s:s1")}
    assert {key_slot(key.encode()) for key in call.keys} == allowed


async def test_a_payment_and_a_cashout_write_only_their_users_keys(
    store: Store, redis_url: str
) -> None:
    """Apart from the payment's record, kept by the provider's event id (global, so that
    the same event is never credited to two users). In steps across slots (a cluster)
    the user's own record of the payment is written too, in the user's slot."""
    paid = await written_by(
        store, payments.apply_payment(store, "alice", "evt-1", "payment.succeeded", "coins_100")
    )
    users_keys = {keys.wallet("alice"), keys.purchases("alice"), keys.journal("alice")}
    if store.payments_across_slots:
        users_keys.add(keys.user_payment("alice", "evt-1"))
    assert paid == users_keys | {keys.payment_seen("evt-1")}

    economy = {"holding_period_days": 0, "cashout_min_diamonds": 2}
    settings = make_settings(redis_url, store.settings.data_dir, economy=economy)
    cashing = Store(store.redis, settings)
    await live_stream(cashing, "s1", "tina")
    rose = cashing.settings.gift("rose")
    assert rose is not None
    await gifts.run_send_gift(cashing, viewer("alice"), "s1", rose, 10, "k")
    cashed = await written_by(cashing, wallet.cashout(cashing, "tina", 4, "c1"))
    assert tags(cashed) == {"u:tina"}
    assert keys.journal("tina") in cashed
