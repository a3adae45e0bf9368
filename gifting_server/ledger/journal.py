"""How a journal entry is read back: the one place that knows the compact gift entry.

A purchase, a refund or a cashout is an entry of named fields (`type`, `user`, ...).
A gift, written on every gift's path, is one field `g` holding its values in a fixed
order, separated by "|" (ids, keys and numbers never hold one): one field costs Redis
~13,000 instructions less per gift than fourteen (docs/performance.md). `fields` turns
it back into the named fields every reader uses; entries written before, with named
fields, are read as they are. lua/include/earn.lua (`journalGift`) writes it.

A gift counted in a live battle has a second field `b`, "<battle id>|<time>": named
`battle` and `battle_at` (Redis's TIME in unix ms when the gift's side counted it).
"""

from __future__ import annotations

# The values of `g`, in order; `limit` (the sender's own daily limit) and `unverified`
# ("1": sent without age verification) are empty when they do not apply.
GIFT_FIELDS = (
    "user",
    "to",
    "stream",
    "gift",
    "count",
    "coins",
    "diamonds",
    "platform",
    "share",
    "event_id",
    "at",
    "limit",
    "unverified",
    "key",
)
OPTIONAL = frozenset({"limit", "unverified"})


def fields(entry: dict[str, str]) -> dict[str, str]:
    """The entry's named fields. A compact gift entry that does not split into its
    values gives {"type": "gift"} alone, which the audit reports as lacking fields."""
    packed = entry.get("g")
    if packed is None:
        return entry
    values = packed.split("|", len(GIFT_FIELDS) - 1)
    if len(values) != len(GIFT_FIELDS):
        return {"type": "gift"}
    named = {"type": "gift"}
    for name, value in zip(GIFT_FIELDS, values, strict=True):
        if value or name not in OPTIONAL:
            named[name] = value
    battle = entry.get("b")
    if battle is not None:
        named["battle"], _, named["battle_at"] = battle.partition("|")
    return named
