"""Live battles between two streams: invite, accept, decline, cancel, forfeit, end.

A battle spans two streams, whose keys are in two slots on a cluster, so every
change is a sequence of one-slot steps over a record with explicit states, each
step conditional on the state it expects (docs/battles.md has the states, who moves
them and what each crash leaves):

    inviting -> invited -> accepting -> live -> ended
        \\-> cancelled   \\-> declined | cancelled (cancel, expiry, a stream ended)

Every battle not closed for good is in `keys.BATTLES_DUE` with the time a worker
should look at it: the invite's expiry, the battle's end, or, before a step that a
crash may cut short, `recover_after_ms` ahead. `battle_steps.advance` drives a
battle from whatever state it is in to the next, idempotently: the requests here
call it, and the battle ticker of whichever worker holds the lease
(battle_ticker.py) calls it for every battle that is due, so a battle whose worker
died still ends, once.
"""

from __future__ import annotations

import uuid
from typing import Any

from gifting_server.auth import Identity, Role
from gifting_server.errors import ErrorCode, GiftingError, ScriptCode, script_error
from gifting_server.fields import invalid
from gifting_server.ledger import battle_record, keys
from gifting_server.ledger.battle_record import FINAL, Record
from gifting_server.ledger.battle_steps import (
    advance,
    close_for_good,
    close_unstarted,
    due_at,
    finish,
    publish,
    recover_at,
    run,
    start_invited_side,
    step,
)
from gifting_server.ledger.store import Store, guarded

# The reasons a battle closed, shown as `reason`: ended by time or by a forfeit;
# declined; cancelled by a streamer, by expiry, because a stream ended, or because
# the invite could not be set up (a worker died between its steps).
REASONS = ("time", "forfeit", "declined", "cancelled", "expired", "stream_ended", "failed")


def _conflict(message: str) -> GiftingError:
    return GiftingError(ErrorCode.BATTLE_CONFLICT, message)


# -- the requests --------------------------------------------------------------------


async def invite(
    store: Store, who: Identity, stream_id: str, opponent: str, duration_s: int, key: str
) -> tuple[dict[str, Any], bool]:
    """Invite `opponent` to a battle of `duration_s`; the body and whether it is new.
    The same key answers the first invite again (its battle as it stands now)."""
    who.require(Role.STREAMER)
    rules = store.settings.battles
    if not rules.min_duration_s <= duration_s <= rules.max_duration_s:
        raise invalid(
            f"duration_s must be between {rules.min_duration_s} and {rules.max_duration_s}"
        )
    if opponent == stream_id:
        raise invalid("a stream cannot battle itself")
    invitation = keys.battle_invitation(stream_id, key)
    if not await guarded(store.redis.exists(invitation)):  # a retry: its first answer
        await _check_new_invite(store, who, stream_id, opponent, invitation)
    battle_id = f"{keys.BATTLE_ID_PREFIX}{uuid.uuid4().hex[:20]}.{stream_id}"
    await recover_at(store, battle_id)
    result = await _invite_step(store, who, stream_id, battle_id, opponent, duration_s, key)
    first, replayed = str(result[1]), bool(result[2])
    if first != battle_id:  # a retry: the id drawn for it was never used
        await guarded(store.scripts.command(keys.BATTLES_DUE, "ZREM", keys.BATTLES_DUE, battle_id))
    battle_id = first
    record = await battle_record.read_known(store, battle_id)
    if record.status == "inviting":  # new, or a retry after a crash between the steps
        record = await _lock_opponent(store, record)
    refused = record.fields.get("refused")
    if refused:  # the first request was refused: so is its retry
        code = ErrorCode.BATTLE_CONFLICT
        if refused == "unknown_stream":
            code = ErrorCode.UNKNOWN_STREAM
        raise GiftingError(code, record.fields.get("refused_message", "the invite was refused"))
    return await battle_record.view(store, record), not replayed


async def _check_new_invite(
    store: Store, who: Identity, stream_id: str, opponent: str, invitation: str
) -> None:
    """The refusals of an invite whose key was unused when read. A copy of it sent at
    the same time may have used the key since, and locked the opponent to its battle:
    that lock is no refusal of this copy, which the first step answers with the copy's
    battle. Its key is written (step 1) before the opponent is locked (step 2), so a
    refusal that saw that lock finds the key when read again."""
    try:
        await _check_streams(store, who, stream_id, opponent)
    except GiftingError:
        if not await guarded(store.redis.exists(invitation)):
            raise


async def _check_streams(store: Store, who: Identity, stream_id: str, opponent: str) -> None:
    """The refusals of an invite, read before anything is written (the steps check
    them again, atomically, when they lock each stream)."""
    owner = await guarded(store.redis.hget(keys.stream(stream_id), "streamer"))
    if owner is None:
        raise GiftingError(ErrorCode.UNKNOWN_STREAM, "no such stream")
    if owner != who.user_id:
        raise GiftingError(ErrorCode.FORBIDDEN, "this stream belongs to another streamer")
    streamer, status, holder = await guarded(
        store.redis.hmget(keys.stream(opponent), ["streamer", "status", "battle_lock"])
    )
    if streamer is None:
        raise GiftingError(ErrorCode.UNKNOWN_STREAM, "no such stream to invite")
    if streamer == who.user_id:
        raise _conflict("a battle needs another streamer's stream")
    if status != "live":
        raise _conflict("the invited stream is not live")
    if holder and await _lock_holds(store, str(holder)):
        raise _conflict("the opponent is already in a battle")


async def _lock_holds(store: Store, holder: str) -> bool:
    """A stream's lock to `holder` stands while that battle is not over for good."""
    record = await battle_record.read(store, holder) if "." in holder else None
    return record is not None and record.status not in FINAL


async def _invite_step(
    store: Store,
    who: Identity,
    stream_id: str,
    battle_id: str,
    opponent: str,
    duration_s: int,
    key: str,
) -> list[Any]:
    args = [
        who.user_id,
        battle_id,
        f"{opponent}|{duration_s}",
        opponent,
        duration_s,
        store.clock(),
        store.settings.limits.idempotency_ttl_s * 1000,
        stream_id,
    ]
    stream_keys = [
        keys.stream(stream_id),
        keys.battle(battle_id),
        keys.battle_invitation(stream_id, key),
    ]
    for _ in range(2):
        result = await run(store, "battle_invite", stream_keys, args)
        code = int(result[0])
        if code == ScriptCode.BATTLE_CONFLICT and await _released_stale(
            store, stream_id, str(result[1])
        ):
            continue  # a lock a crash left behind: gone, try again
        break
    if code == ScriptCode.OK:
        return result
    await guarded(store.scripts.command(keys.BATTLES_DUE, "ZREM", keys.BATTLES_DUE, battle_id))
    if code == ScriptCode.NOT_STREAM_OWNER:
        raise GiftingError(ErrorCode.FORBIDDEN, "this stream belongs to another streamer")
    if code == ScriptCode.STREAM_NOT_LIVE:
        raise _conflict("your stream is not live")
    if code == ScriptCode.BATTLE_CONFLICT:
        raise _conflict("your stream is already in a battle (a pending invite or a live one)")
    raise script_error(code)


async def _lock_opponent(store: Store, record: Record) -> Record:
    """Step 2 of an invite (the opponent's slot), then step 3 (the record's)."""
    battle_id, (_, opponent) = record.battle_id, record.streams
    inviter = record.streamers[0]
    for _ in range(2):
        result = await run(store, "battle_lock", [keys.stream(opponent)], [battle_id, inviter])
        code = int(result[0])
        if code == ScriptCode.BATTLE_CONFLICT and await _released_stale(
            store, opponent, str(result[1])
        ):
            continue
        break
    if code == ScriptCode.OK:
        expires_at = store.clock() + store.settings.battles.invite_ttl_s * 1000
        state = await step(
            store,
            battle_id,
            "inviting",
            "invited",
            b_streamer=str(result[1]),
            b_name=str(result[2]),
            expires_at=expires_at,
        )
        record = await battle_record.read_known(store, battle_id)
        if state != "invited":  # taken for abandoned meanwhile (a very slow step)
            await close_for_good(store, record)
            return record
        await due_at(store, battle_id, expires_at)
        await publish(store, record)
        return record
    refusals = {
        ScriptCode.UNKNOWN_STREAM: ("unknown_stream", "no such stream to invite"),
        ScriptCode.STREAM_NOT_LIVE: ("battle_conflict", "the invited stream is not live"),
        ScriptCode.SELF_GIFT: ("battle_conflict", "a battle needs another streamer's stream"),
        ScriptCode.BATTLE_CONFLICT: ("battle_conflict", "the opponent is already in a battle"),
    }
    refused, message = refusals.get(ScriptCode(code), ("battle_conflict", "refused"))
    await step(
        store,
        battle_id,
        "inviting",
        "cancelled",
        reason="failed",
        refused=refused,
        refused_message=message,
    )
    await close_for_good(store, await battle_record.read_known(store, battle_id))
    return await battle_record.read_known(store, battle_id)


async def accept(store: Store, who: Identity, battle_id: str) -> dict[str, Any]:
    record = await battle_record.read_known(store, battle_id)
    await _require_invited(store, who, record)
    if record.status in ("accepting", "live", "ended"):  # accepted before: as it stands
        return await battle_record.view(store, await advance(store, record))
    if record.status != "invited":
        raise _conflict(f"the battle is {record.public_status}; it can no longer be accepted")
    await recover_at(store, battle_id)
    a = record.streams[0]
    result = await run(
        store,
        "battle_accept",
        [keys.battle(battle_id), keys.stream(a), keys.battle_top(a)],
        [battle_id],
    )
    code = int(result[0])
    if code == ScriptCode.BATTLE_EXPIRED:
        await close_unstarted(store, battle_id, "expired")
        raise script_error(code)
    if code == ScriptCode.STREAM_NOT_LIVE:
        raise _conflict("the inviting stream is no longer live")
    if code != ScriptCode.OK:
        raise script_error(code)
    state = str(result[2])
    if state not in ("accepting", "live", "ended"):  # declined or cancelled meanwhile
        raise _conflict(f"the battle is {battle_record.PUBLIC_STATUS.get(state, state)}")
    return await battle_record.view(
        store, await advance(store, await battle_record.read_known(store, battle_id))
    )


async def decline(store: Store, who: Identity, battle_id: str) -> dict[str, Any]:
    record = await battle_record.read_known(store, battle_id)
    await _require_invited(store, who, record)
    return await _close_by_request(store, record, "declined", "declined")


async def cancel(store: Store, who: Identity, battle_id: str) -> dict[str, Any]:
    record = await battle_record.read_known(store, battle_id)
    _require_side(who, record, invited_only=False)
    return await _close_by_request(store, record, "cancelled", "cancelled")


async def get(store: Store, battle_id: str) -> dict[str, Any]:
    return await battle_record.view(store, await battle_record.read_known(store, battle_id))


async def _require_invited(store: Store, who: Identity, record: Record) -> None:
    """The invited streamer. Until an invite's third step ran, its record does not name
    them yet: the invited stream's owner is told to wait, not that it is not theirs."""
    who.require(Role.STREAMER)
    if record.status == "inviting" and who.user_id != record.streamers[0]:
        owner = await guarded(store.redis.hget(keys.stream(record.streams[1]), "streamer"))
        if owner == who.user_id:
            raise _conflict("the invite is still being set up; try again in a moment")
    _require_side(who, record, invited_only=True)


def _require_side(who: Identity, record: Record, *, invited_only: bool) -> None:
    who.require(Role.STREAMER)
    a, b = record.streamers
    if who.user_id == b or (not invited_only and who.user_id == a):
        return
    if invited_only and who.user_id == a:
        raise GiftingError(ErrorCode.FORBIDDEN, "only the invited streamer can answer an invite")
    raise GiftingError(ErrorCode.FORBIDDEN, "this battle is between other streams")


async def _close_by_request(
    store: Store, record: Record, status: str, reason: str
) -> dict[str, Any]:
    if record.status == "invited" and store.clock() >= record.number("expires_at"):
        # expired, the ticker has not closed it yet: answered as after it did
        record = await advance(store, record)
    if record.status == status:  # repeated: answered as it stands
        return await battle_record.view(store, await advance(store, record))
    if record.status not in ("inviting", "invited"):
        raise _conflict(f"the battle is {record.public_status}; it can no longer be {status}")
    await recover_at(store, record.battle_id)
    state = await step(store, record.battle_id, "inviting,invited", status, reason=reason)
    record = await battle_record.read_known(store, record.battle_id)
    if state != status:
        raise _conflict(f"the battle is {record.public_status}; it can no longer be {status}")
    await close_for_good(store, record)
    return await battle_record.view(store, record)


async def stream_ended(store: Store, stream_id: str, battle_id: str) -> None:
    """A stream of the battle ended (`streams.end_stream`): an invite is cancelled, a
    live battle is forfeited at once (the stream that ended loses)."""
    record = await battle_record.read(store, battle_id)
    if record is None or stream_id not in record.streams:
        return
    if record.status in ("inviting", "invited"):
        record = await close_unstarted(store, battle_id, "stream_ended")
        if record.status in FINAL:
            return  # else accepted meanwhile: forfeited below
    if record.status == "accepting":
        record = await start_invited_side(store, record)
    if record.status == "live":
        if not record.fields.get("forfeit"):
            await step(store, battle_id, "live", "live", forfeit=stream_id)
        await finish(store, await battle_record.read_known(store, battle_id))
    else:
        await advance(store, record)


async def _released_stale(store: Store, stream_id: str, holder: str) -> bool:
    """The stream is locked to `holder`: when that battle is over for good (or has no
    record: a crash before it was written), let the stream go. True when it did.
    A final battle whose step 9 a crash cut short is finished here, its end published
    first: published later, it would replace what the stream shows of its next battle."""
    if not holder:
        return False
    record = await battle_record.read(store, holder) if "." in holder else None
    if record is not None:
        if record.status not in FINAL:
            return False
        await close_for_good(store, record)  # lets go of both its streams
        return True
    result = await run(store, "battle_release", [keys.stream(stream_id)], [holder])
    return bool(int(result[1]))
