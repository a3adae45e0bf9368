"""Every Redis key name, built in one place.

Keys carry hash tags so that moving to Redis Cluster changes no name:
`{u:ID}` groups a user's wallet state, its journal and platform account,
`{s:ID}` a stream's live state, and `{ledger}` the payment records (a provider's
event id is global) and the journal and platform account kept before they were
split per user (docs/scaling.md, "The ledger across slots").
"""

from __future__ import annotations

import binascii
from functools import cache

SLOTS = 16384  # the hash slots of a Redis Cluster

LEGACY_JOURNAL = "{ledger}:journal"
LEGACY_PLATFORM_ACCOUNT = "{ledger}:platform"


def journal(user_id: str) -> str:
    """The journal entries a money script writes in this user's slot: their purchases,
    refunds and cash-outs, and the gifts they received (a stream, in order)."""
    return f"{{u:{user_id}}}:journal"


def platform_account(user_id: str) -> str:
    """The platform's share of the gifts this user received: field `coins`."""
    return f"{{u:{user_id}}}:platform"


def wallet(user_id: str) -> str:
    return f"{{u:{user_id}}}:wallet"


def held_diamonds(user_id: str) -> str:
    """Diamonds in their holding period: field = release time (unix ms), value = diamonds."""
    return f"{{u:{user_id}}}:held"


def earnings_by_day(user_id: str) -> str:
    """Diamonds held by UTC day earned (field = day number), as kept before holds by the
    hour: still read and released by cash-outs, no longer written."""
    return f"{{u:{user_id}}}:earned"


def idempotency(user_id: str, key: str) -> str:
    return f"{{u:{user_id}}}:idem:{key}"


def outbox(user_id: str) -> str:
    """The gift transfers debited from this user and not yet credited (a gift across
    slots: docs/scaling.md). One outbox per cluster slot, in the slot of the user's
    keys, so that the relay reads a fixed set of keys: `outbox_of_slot`."""
    return outbox_of_slot(slot_of_tag(f"u:{user_id}"))


def outbox_of_slot(slot: int) -> str:
    return f"{{{_slot_tags()[slot]}}}:outbox"


def credited(side_tag_key: str, credit_id: str) -> str:
    """The record of a transfer credited on one side: the stream's (`stream(S)`) or
    the streamer's (`wallet(T)`) slot, named after a key of that slot. `credit_id`
    names one debit (`Transfer.credit_id`), not only its idempotency key."""
    tag = side_tag_key[: side_tag_key.index("}") + 1]
    return f"{tag}:credited:{credit_id}"


def slot_of_tag(tag: str) -> int:
    """The cluster slot of keys tagged `{tag}` (CRC16/XMODEM, as Redis computes it)."""
    return binascii.crc_hqx(tag.encode(), 0) % SLOTS


@cache
def _slot_tags() -> list[str]:
    """For every slot, a short tag that hashes to it: "o:<n>", the first n that does.
    About 140,000 CRCs, some 50 ms, once per process."""
    tags: list[str | None] = [None] * SLOTS
    missing, n = SLOTS, 0
    while missing:
        tag = f"o:{n}"
        slot = slot_of_tag(tag)
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        n += 1
    return [tag for tag in tags if tag is not None]


def payment_seen(event_id: str) -> str:
    """A provider's event id is unique across users, so its record is global."""
    return f"{{ledger}}:payment:{event_id}"


def user_payment(user_id: str, event_id: str) -> str:
    """A payment's record in its user's slot, holding its result: what makes applying
    it idempotent on a cluster, where the global record is in another slot."""
    return f"{{u:{user_id}}}:payment:{event_id}"


def purchases(user_id: str) -> str:
    return f"{{u:{user_id}}}:purchases"


def cashouts(user_id: str) -> str:
    return f"{{u:{user_id}}}:cashouts"


def channel_leaderboard(streamer_id: str, period: str, bucket: int | None = None) -> str:
    """Top gifters of a streamer across streams: period is day or all (a week is
    the sum of its day boards)."""
    suffix = period if bucket is None else f"{period}:{bucket}"
    return f"{{u:{streamer_id}}}:lb:{suffix}"


def stream(stream_id: str) -> str:
    return f"{{s:{stream_id}}}:meta"


def stream_history(stream_id: str) -> str:
    return f"{{s:{stream_id}}}:history"


def stream_leaderboard(stream_id: str) -> str:
    return f"{{s:{stream_id}}}:lb"


def open_streaks(stream_id: str) -> str:
    return f"{{s:{stream_id}}}:streaks"


def stream_channel(stream_id: str) -> str:
    """The pub/sub channel that carries a stream's events between workers."""
    return f"{{s:{stream_id}}}:events"


# Before a script's channel argument: publish with SPUBLISH (a cluster), not PUBLISH.
# `emitEvent` (lua/include/event.lua) reads it; a channel starts with "{" otherwise,
# and the mark must sort below "{" (the script compares, and strips 8 characters).
SHARDED = "sharded:"


WALLET_PATTERN = "{u:*}:wallet"
USER_PAYMENT_PATTERN = "{u:*}:payment:*"
JOURNAL_PATTERN = "{u:*}:journal"
PLATFORM_PATTERN = "{u:*}:platform"
STREAM_PATTERN = "{s:*}:meta"
OUTBOX_PATTERN = "{o:*}:outbox"

# The keys a gift writes without reading them first, and the type it writes: its
# scripts do not check their type (a TYPE call per key cost ~9% of a gift), so only
# `reconcile` finds one that someone with Redis access replaced (docs/performance.md).
GIFT_WRITTEN_TYPES = (
    ("{s:*}:lb", "zset"),
    ("{u:*}:lb:day:*", "zset"),
    ("{u:*}:lb:all", "zset"),
    ("{s:*}:streaks", "zset"),
    ("{s:*}:battle_top", "zset"),
    ("{s:*}:history", "stream"),
    ("{s:*}:webhooks:log", "stream"),
    (JOURNAL_PATTERN, "stream"),
    (OUTBOX_PATTERN, "zset"),
    (PLATFORM_PATTERN, "hash"),
    ("{u:*}:held", "hash"),
)


def user_of_wallet_key(key: str) -> str:
    return key[len("{u:") : -len("}:wallet")]


def platform_of_journal(journal_key: str) -> str:
    """The platform account a journal's gift entries credited: the same user's, or the
    legacy account for the legacy journal."""
    if journal_key == LEGACY_JOURNAL:
        return LEGACY_PLATFORM_ACCOUNT
    return journal_key.removesuffix(":journal") + ":platform"


def user_and_event_of_user_payment(key: str) -> tuple[str, str]:
    user, _, event_id = key[len("{u:") :].partition("}:payment:")
    return user, event_id


def stream_of_meta_key(key: str) -> str:
    return key[len("{s:") : -len("}:meta")]


def battle_top(stream_id: str) -> str:
    """The stream's contributors to its current (or last) battle: sender -> coins. The
    side's state is in the stream meta: `battle` ("<battle id>|<ends_at>", while it
    counts), `battle_points`, `battle_closed` ("<battle id>|<TIME>", once closed);
    lua/include/battle.lua."""
    return f"{{s:{stream_id}}}:battle_top"


BATTLE_ID_PREFIX = "bt_"


def inviter_of_battle(battle_id: str) -> str:
    """A battle id is `bt_<hex>.<inviting stream>`: its record is in that stream's slot."""
    return battle_id.partition(".")[2]


def battle(battle_id: str) -> str:
    """A battle's record (ledger/battles.py): its state, both sides' streams and
    streamers, its times, and once it ended the final points and winner."""
    return f"{{s:{inviter_of_battle(battle_id)}}}:battle:{battle_id}"


def battle_invitation(stream_id: str, idempotency_key: str) -> str:
    """The battle an invite from this stream with this idempotency key made."""
    return f"{{s:{stream_id}}}:battle_idem:{idempotency_key}"


# Every battle not yet closed for good: battle id -> when a worker should look at it
# (an invite's expiry, a battle's end, or soon after a step a crash may have left).
# Written at each step of a battle, never by a gift.
BATTLES_DUE = "{battles}:due"
# The lease of the worker that ticks and finishes battles (`battle_ticker.py`).
BATTLES_LEASE = "{battles}:lease"
BATTLE_PATTERN = "{s:*}:battle:bt_*"


def presence(stream_id: str) -> str:
    """Viewers per worker: field = worker id, value = "<count>|<expires ms>"."""
    return f"{{s:{stream_id}}}:presence"


def combo_field(sender_id: str, gift_id: str) -> str:
    """A sender's running combo of one gift: a field of the stream meta."""
    return f"c:{sender_id}:{gift_id}"


# Outgoing webhooks (gifting_server/webhooks/, docs/webhooks.md). A stream's endpoints,
# their delivery state and its delivery log live in the stream's slot, so that the
# scripts that append an event (lua/include/event.lua) feed the log in the same step.
WEBHOOK_LOG_FIELD = "webhook_log"  # the stream meta's field: the log's name, while it has endpoints


def webhook_log(stream_id: str) -> str:
    """The stream's events not yet delivered to all its endpoints (a Redis Stream; entry
    id "<event_id>-0", field "e" = the event), fed by `emitEvent` while the stream meta's
    `WEBHOOK_LOG_FIELD` names it, trimmed by the deliverer up to every endpoint's cursor."""
    return f"{{s:{stream_id}}}:webhooks:log"


def stream_webhooks(stream_id: str) -> str:
    """The ids of the stream's endpoints, enabled or disabled (a set)."""
    return f"{{s:{stream_id}}}:webhooks"


def stream_webhooks_active(stream_id: str) -> str:
    """The ids of the stream's endpoints still being delivered to (a set): the log is
    fed while it is not empty."""
    return f"{{s:{stream_id}}}:webhooks:active"


def webhook(stream_id: str, webhook_id: str) -> str:
    """One endpoint (a hash): url, kinds, secret, streamer, created_at, status, reason,
    cursor (the last event id delivered or passed over), failures, next_at."""
    return f"{{s:{stream_id}}}:webhook:{webhook_id}"


def webhook_attempts(stream_id: str, webhook_id: str) -> str:
    """The endpoint's recent delivery attempts, newest first (a list of JSON objects)."""
    return f"{{s:{stream_id}}}:webhook:{webhook_id}:attempts"


def webhook_lease(stream_id: str) -> str:
    """Which worker delivers the stream's messages now (one at a time keeps them in order)."""
    return f"{{s:{stream_id}}}:webhooks:lease"


def streamer_webhooks(user_id: str) -> str:
    """A streamer's endpoints: field = webhook id, value = its stream id (a hash)."""
    return f"{{u:{user_id}}}:webhooks"


def streamer_webhook(user_id: str, webhook_id: str) -> str:
    """An endpoint for all the streamer's streams (a hash): url, kinds, secret,
    created_at. Each stream it follows has its own record (`webhook`, scope "all")."""
    return f"{{u:{user_id}}}:webhook:{webhook_id}"


def webhook_test_gate(user_id: str, webhook_id: str) -> str:
    """Present (with a TTL) while the endpoint's last test delivery is too recent for
    another: a test sends a request to a URL of the streamer's choosing on demand."""
    return f"{{u:{user_id}}}:webhook:{webhook_id}:test_gate"


def streamer_webhook_streams(user_id: str, webhook_id: str) -> str:
    """The streams such an endpoint was added to (a set)."""
    return f"{{u:{user_id}}}:webhook:{webhook_id}:streams"


def streamer_webhook_attempts(user_id: str, webhook_id: str) -> str:
    """Its test deliveries, newest first (a list of JSON objects)."""
    return f"{{u:{user_id}}}:webhook:{webhook_id}:attempts"


def streamer_live_streams(user_id: str) -> str:
    """The streamer's streams gone live through the API and not ended since (a set):
    what an endpoint for all their streams is added to when it is registered."""
    return f"{{u:{user_id}}}:streams:live"


def webhook_registration(user_id: str, idempotency_key: str) -> str:
    """A registration's idempotency record: "<fingerprint>|<webhook id>"."""
    return f"{{u:{user_id}}}:webhooks:idem:{idempotency_key}"


# The streams that have endpoints, for every worker's deliverer to find (a set; one key,
# written only when endpoints come and go, never on an event's path).
WEBHOOK_STREAMS = "{webhooks}:streams"
