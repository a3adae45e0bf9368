"""Cash-outs after they were asked for: the streamer's list, and the operator's
verdict (paid, or failed: the diamonds go back). Asking for one is `wallet.cashout`.

A cash-out lives in its streamer's slot (`{u:T}:cashouts`). Its id names the
streamer (`co_<random hex>.<streamer id>`), so that the operator's call, which has
only the id, finds its slot on a cluster without a global index. Ids of cash-outs
asked for before that (`co_<hex>`) are found by a scan of every streamer's list.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ids import is_id
from gifting_server.ledger import keys
from gifting_server.ledger.store import Store, guarded

STATUSES = ("paid", "failed")
LISTED = 100  # the most a list shows, newest first
CASHOUTS_PATTERN = "{u:*}:cashouts"


def new_cashout_id(streamer_id: str) -> str:
    return f"co_{uuid.uuid4().hex[:24]}.{streamer_id}"


def public(record: dict[str, Any], currency: str) -> dict[str, Any]:
    """A stored cash-out as the API shows it (times in unix ms)."""
    try:
        return _public(record, currency)
    except (KeyError, TypeError):
        raise _corrupt() from None


def _corrupt() -> GiftingError:
    return GiftingError(
        ErrorCode.STORAGE_CORRUPT,
        "a stored cash-out is unreadable; nothing was changed; run `gifting-server reconcile`",
    )


def _parsed(raw: str | bytes) -> dict[str, Any]:
    try:
        record = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _corrupt() from None
    if not isinstance(record, dict):
        raise _corrupt()
    return record


def _public(record: dict[str, Any], currency: str) -> dict[str, Any]:
    shown = {
        "cashout_id": record["cashout_id"],
        "diamonds": record["diamonds"],
        "amount": {"amount": record["cents"], "currency": record.get("currency", currency)},
        "status": record["status"],
        "created_at": record["created_ms"],
    }
    if "completed_ms" in record:
        shown["completed_at"] = record["completed_ms"]
    return shown


async def list_cashouts(
    store: Store, streamer_id: str, limit: int = LISTED
) -> list[dict[str, Any]]:
    stored = await guarded(store.redis.hvals(keys.cashouts(streamer_id)))
    currency = store.settings.economy.currency
    shown = [public(_parsed(raw), currency) for raw in stored]
    shown.sort(key=lambda c: (c["created_at"], c["cashout_id"]), reverse=True)
    return shown[:limit]


async def complete(store: Store, cashout_id: str, status: str) -> dict[str, Any]:
    """Mark a pending cash-out paid or failed (failed returns its diamonds, journaled).
    The same status again answers the same; the other one is `cashout_conflict`."""
    if status not in STATUSES:
        raise GiftingError(ErrorCode.INVALID_REQUEST, "status must be paid or failed")
    streamer_id = await streamer_of(store, cashout_id)
    result = await store.run_script(
        "complete_cashout",
        [keys.cashouts(streamer_id), keys.wallet(streamer_id), keys.journal(streamer_id)],
        [streamer_id, cashout_id, status, store.clock()],
    )
    return public(_parsed(result[1]), store.settings.economy.currency)


async def streamer_of(store: Store, cashout_id: str) -> str:
    _, dot, streamer_id = cashout_id.rpartition(".")
    if dot:
        if not is_id(streamer_id):
            raise GiftingError(ErrorCode.UNKNOWN_CASHOUT, "no such cash-out")
        return streamer_id
    for key in await guarded(_lists_holding(store, cashout_id)):
        return key[len("{u:") : -len("}:cashouts")]
    raise GiftingError(ErrorCode.UNKNOWN_CASHOUT, "no such cash-out")


async def _lists_holding(store: Store, cashout_id: str) -> list[str]:
    """The streamers' cash-out lists that hold an id of the old form (at most one)."""
    found = []
    async for key in store.redis.scan_iter(match=CASHOUTS_PATTERN, count=1000, _type="hash"):
        if await store.redis.hexists(key, cashout_id):
            found.append(str(key))
    return found
