"""Every Redis key name, built in one place.

Keys carry hash tags so that moving to Redis Cluster changes no name:
`{u:ID}` groups a user's wallet state, its journal and platform account,
`{s:ID}` a stream's live state, and `{ledger}` the payment records (a provider's
event id is global) and the journal and platform account kept before they were
split per user (docs/scaling.md, "The ledger across slots").
"""

from __future__ import annotations

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


def presence(stream_id: str) -> str:
    """Viewers per worker: field = worker id, value = "<count>|<expires ms>"."""
    return f"{{s:{stream_id}}}:presence"


def combo_field(sender_id: str, gift_id: str) -> str:
    """A sender's running combo of one gift: a field of the stream meta."""
    return f"c:{sender_id}:{gift_id}"
