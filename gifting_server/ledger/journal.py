"""How a journal entry is read back: the one place that knows the compact gift entry.

A purchase, a refund or a cashout is an entry of named fields (`type`, `user`, ...).
A gift, written on every gift's path, is one field `g` holding its values in a fixed
order, separated by "|" (ids, keys and numbers never hold one): one field costs Redis
~13,000 instructions less per gift than fourteen (docs/performance.md). `fields` turns
it back into the named fields every reader uses; entries written before, with named
fields, are read as they are. lua/include/earn.lua (`journalGift`) writes it.

A gift counted in a live battle has a second field `b`, "<battle id>|<time>": named
`battle` and `battle_at` (Redis's TIME in unix ms when the gift's side counted it).

`send_gifts` journals the gifts of one call to one streamer as one entry (one XADD a
call, not one a gift: docs/performance.md): `g` holds each gift's values, a line a
gift ("\n" between them), and `b`, when one of them counted in a battle, each gift's
battle value a line, empty for a gift outside it. `records` gives an entry's gifts one
by one, in their order; every reader of the journal goes through it.
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


def records(entry: dict[str, str]) -> list[dict[str, str]]:
    """The named fields of each record the entry holds, in order: the entry itself for a
    purchase, a refund or a cashout; one per gift for a gift entry. A gift that does
    not split into its values gives {"type": "gift"} alone, which the audit reports
    as lacking fields."""
    packed = entry.get("g")
    if packed is None:
        return [entry]
    gifts = packed.split("\n")
    battles = entry.get("b")
    marks = battles.split("\n") if battles is not None else [""] * len(gifts)
    if len(marks) != len(gifts):
        return [{"type": "gift"} for _ in gifts]
    return [_gift(values, mark) for values, mark in zip(gifts, marks, strict=True)]


def fields(entry: dict[str, str]) -> dict[str, str]:
    """The named fields of an entry of one record (a lone gift's, a purchase's, ...)."""
    held = records(entry)
    if len(held) != 1:
        raise ValueError(f"a journal entry of {len(held)} gifts: read it with `records`")
    return held[0]


def _gift(packed: str, battle: str) -> dict[str, str]:
    values = packed.split("|", len(GIFT_FIELDS) - 1)
    if len(values) != len(GIFT_FIELDS):
        return {"type": "gift"}
    named = {"type": "gift"}
    for name, value in zip(GIFT_FIELDS, values, strict=True):
        if value or name not in OPTIONAL:
            named[name] = value
    if battle:
        named["battle"], _, named["battle_at"] = battle.partition("|")
    return named
