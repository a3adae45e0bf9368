"""Live battles between two streams: invite, accept, decline, cancel, forfeit, end.

A battle spans two streams, whose keys are in two slots on a cluster, so every
change is a sequence of one-slot steps over a record with explicit states, each
step conditional on the state it expects (docs/battles.md has the states, who moves
them and what each crash leaves):

    inviting -> invited -> accepting -> live -> ended
        \\-> cancelled   \\-> declined | cancelled (cancel, expiry, a stream ended)

Every battle not closed for good is in `keys.BATTLES_DUE` with the time a worker
should look at it: the invite's expiry, the battle's end, or, before a step that a
crash may cut short, `recover_after_ms` ahead. `advance` drives a battle from
whatever state it is in to the next, idempotently: the requests call it, and the
battle ticker of whichever worker holds the lease (battle_ticker.py) calls it for
every battle that is due, so a battle whose worker died still ends, once.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from gifting_server.auth import Identity, Role
from gifting_server.errors import ErrorCode, GiftingError, ScriptCode, script_error
from gifting_server.fields import invalid
from gifting_server.ledger import battle_record, keys
from gifting_server.ledger.battle_record import FINAL, Record
from gifting_server.ledger.store import Store, guarded
from gifting_server.logs import audit

# The reasons a battle closed, shown as `reason`: ended by time or by a forfeit;
# declined; cancelled by a streamer, by expiry, because a stream ended, or because
# the invite could not be set up (a worker died between its steps).
REASONS = ("time", "forfeit", "declined", "cancelled", "expired", "stream_ended", "failed")


def _conflict(message: str) -> GiftingError:
    return GiftingError(ErrorCode.BATTLE_CONFLICT, message)


async def _run(store: Store, script: str, keys_: list[str], args: list[Any]) -> list[Any]:
    """A battle script's reply, whatever its code (the callers decide what each means)."""
    result: list[Any] = await guarded(store.scripts.run(script, keys_, args))
    return result


async def _due(store: Store, battle_id: str, at_ms: int, *, sooner_only: bool = False) -> None:
    due = keys.BATTLES_DUE
    flags = ("LT",) if sooner_only else ()
    await guarded(store.scripts.command(due, "ZADD", due, *flags, at_ms, battle_id))


async def _recover_at(store: Store, battle_id: str) -> None:
    """Before a step a crash may cut short: any worker looks at the battle then."""
    grace = store.settings.battles.recover_after_ms
    await _due(store, battle_id, store.clock() + grace, sooner_only=True)


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
        await _check_streams(store, who, stream_id, opponent)
    battle_id = f"{keys.BATTLE_ID_PREFIX}{uuid.uuid4().hex[:20]}.{stream_id}"
    await _recover_at(store, battle_id)
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
        result = await _run(store, "battle_invite", stream_keys, args)
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
        result = await _run(store, "battle_lock", [keys.stream(opponent)], [battle_id, inviter])
        code = int(result[0])
        if code == ScriptCode.BATTLE_CONFLICT and await _released_stale(
            store, opponent, str(result[1])
        ):
            continue
        break
    if code == ScriptCode.OK:
        expires_at = store.clock() + store.settings.battles.invite_ttl_s * 1000
        state = await _step(
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
        await _due(store, battle_id, expires_at)
        await publish(store, record)
        return record
    refusals = {
        ScriptCode.UNKNOWN_STREAM: ("unknown_stream", "no such stream to invite"),
        ScriptCode.STREAM_NOT_LIVE: ("battle_conflict", "the invited stream is not live"),
        ScriptCode.SELF_GIFT: ("battle_conflict", "a battle needs another streamer's stream"),
        ScriptCode.BATTLE_CONFLICT: ("battle_conflict", "the opponent is already in a battle"),
    }
    refused, message = refusals.get(ScriptCode(code), ("battle_conflict", "refused"))
    await _step(
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
    _require_side(who, record, invited_only=True)
    if record.status in ("accepting", "live", "ended"):  # accepted before: as it stands
        return await battle_record.view(store, await advance(store, record))
    if record.status != "invited":
        raise _conflict(f"the battle is {record.public_status}; it can no longer be accepted")
    await _recover_at(store, battle_id)
    a = record.streams[0]
    result = await _run(
        store,
        "battle_accept",
        [keys.battle(battle_id), keys.stream(a), keys.battle_top(a)],
        [battle_id],
    )
    code = int(result[0])
    if code == ScriptCode.BATTLE_EXPIRED:
        await _close_unstarted(store, battle_id, "expired")
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
    _require_side(who, record, invited_only=True)
    return await _close_by_request(store, record, "declined", "declined")


async def cancel(store: Store, who: Identity, battle_id: str) -> dict[str, Any]:
    record = await battle_record.read_known(store, battle_id)
    _require_side(who, record, invited_only=False)
    return await _close_by_request(store, record, "cancelled", "cancelled")


async def get(store: Store, battle_id: str) -> dict[str, Any]:
    return await battle_record.view(store, await battle_record.read_known(store, battle_id))


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
    if record.status == status:  # repeated: answered as it stands
        return await battle_record.view(store, await advance(store, record))
    if record.status not in ("inviting", "invited"):
        raise _conflict(f"the battle is {record.public_status}; it can no longer be {status}")
    await _recover_at(store, record.battle_id)
    state = await _step(store, record.battle_id, "inviting,invited", status, reason=reason)
    record = await battle_record.read_known(store, record.battle_id)
    if state != status:
        raise _conflict(f"the battle is {record.public_status}; it can no longer be {status}")
    await close_for_good(store, record)
    return await battle_record.view(store, record)


async def _close_unstarted(store: Store, battle_id: str, reason: str) -> None:
    await _step(store, battle_id, "inviting,invited", "cancelled", reason=reason)
    await close_for_good(store, await battle_record.read_known(store, battle_id))


async def stream_ended(store: Store, stream_id: str, battle_id: str) -> None:
    """A stream of the battle ended (`streams.end_stream`): an invite is cancelled, a
    live battle is forfeited at once (the stream that ended loses)."""
    record = await battle_record.read(store, battle_id)
    if record is None or stream_id not in record.streams:
        return
    if record.status in ("inviting", "invited"):
        await _close_unstarted(store, battle_id, "stream_ended")
        return
    if record.status == "accepting":
        record = await _start_invited_side(store, record)
    if record.status == "live":
        if not record.fields.get("forfeit"):
            await _step(store, battle_id, "live", "live", forfeit=stream_id)
        await finish(store, await battle_record.read_known(store, battle_id))
    else:
        await advance(store, record)


# -- the steps after the requests ----------------------------------------------------


async def advance(store: Store, record: Record) -> Record:
    """Take the battle as far as it can go now; the record as it is then. Safe to run
    from any worker at any time, as often as wanted."""
    status, now = record.status, store.clock()
    if status == "inviting":
        if now >= record.number("created_at") + store.settings.battles.recover_after_ms:
            await _close_unstarted(store, record.battle_id, "failed")
    elif status == "invited":
        if now >= record.number("expires_at"):
            await _close_unstarted(store, record.battle_id, "expired")
    elif status == "accepting":
        await _start_invited_side(store, record)
    elif status == "live":
        await finish(store, record)
    elif status in FINAL:
        await close_for_good(store, record)
    return await battle_record.read_known(store, record.battle_id)


async def _start_invited_side(store: Store, record: Record) -> Record:
    """The invited stream's side, then the record `live` (steps 2 and 3 of an accept)."""
    battle_id, b = record.battle_id, record.streams[1]
    ends_at = record.number("ends_at")
    result = await _run(
        store,
        "battle_start_side",
        [keys.stream(b), keys.battle_top(b)],
        [battle_id, ends_at],
    )
    if int(result[0]) != ScriptCode.OK:
        raise script_error(int(result[0]))
    await _step(store, battle_id, "accepting", "live")
    await _due(store, battle_id, ends_at)
    record = await battle_record.read_known(store, battle_id)
    await publish(store, record)
    return record


async def finish(store: Store, record: Record) -> None:
    """End a live battle once both sides are closed: each side closes when its own
    slot's clock reached `ends_at` (at once after a forfeit). Not over yet on a side:
    the battle is due again when that side says its time is up."""
    early = bool(record.fields.get("forfeit"))
    closed = []
    for stream_id in record.streams:
        result = await _run(
            store,
            "battle_close_side",
            [keys.stream(stream_id), keys.battle_top(stream_id)],
            [record.battle_id, int(early), battle_record.TOP],
        )
        code = int(result[0])
        if code == ScriptCode.BATTLE_NOT_OVER:
            await _due(store, record.battle_id, store.clock() + int(result[1]))
            return
        if code != ScriptCode.OK:
            raise script_error(code)
        closed.append(result)
    ends_at = record.number("ends_at")
    sides = []
    for index, reply in enumerate(closed):
        top = reply[5]
        pairs = [(str(top[i]), int(float(top[i + 1]))) for i in range(0, len(top), 2)]
        sides.append(battle_record.side_of(record, index, int(reply[1]), pairs))
    winner, reason = decide(record, closed, ends_at)
    final = await battle_record.sides_json(store, sides)
    ended_at = max(int(reply[2]) for reply in closed)
    moved, _ = await _move(
        store,
        record.battle_id,
        "live",
        "ended",
        winner=winner or "",
        reason=reason,
        final=orjson.dumps(final).decode(),
        ended_at=ended_at,
    )
    record = await battle_record.read_known(store, record.battle_id)
    if moved:  # once per battle: the one call that ended it
        audit(
            "battle_ended",
            battle_id=record.battle_id,
            streams=list(record.streams),
            points=[side.points for side in sides],
            winner=winner,
            reason=reason,
        )
    await close_for_good(store, record)


def decide(record: Record, closed: list[list[Any]], ends_at: int) -> tuple[str | None, str]:
    """The winner (None: a draw) and why. A stream that ended before `ends_at` forfeits
    (of two, the one that ended first); otherwise the side with more points wins."""
    forfeits = []
    for index, reply in enumerate(closed):
        status, ended_at = str(reply[3]), str(reply[4])
        if status == "ended" and ended_at.isdigit() and int(ended_at) < ends_at:
            forfeits.append((int(ended_at), index))
    a, b = record.streams
    if forfeits:
        loser = min(forfeits)[1]
        return (b if loser == 0 else a), "forfeit"
    points_a, points_b = int(closed[0][1]), int(closed[1][1])
    if points_a == points_b:
        return None, "time"
    return (a if points_a > points_b else b), "time"


async def close_for_good(store: Store, record: Record) -> None:
    """A battle in a final state: its end published once to both streams, both streams
    let go, and the battle off the due list. Every part is safe to repeat."""
    await publish(store, record)
    for stream_id in record.streams:
        if stream_id:
            await _run(store, "battle_release", [keys.stream(stream_id)], [record.battle_id])
    due = keys.BATTLES_DUE
    await guarded(store.scripts.command(due, "ZREM", due, record.battle_id))


async def publish(store: Store, record: Record, body: dict[str, Any] | None = None) -> None:
    """The battle's state as a `battle` event on both streams, when it changed there."""
    if body is None:
        body = await battle_record.view(store, record)
    final = int(record.status in FINAL)
    state = battle_record.fragment(body)
    for stream_id in record.streams:
        if not stream_id:
            continue
        await _run(
            store,
            "publish_battle",
            [keys.stream(stream_id), keys.stream_history(stream_id)],
            [
                record.battle_id,
                state,
                final,
                store.clock(),
                store.settings.history.max_events,
                store.event_channel(stream_id),
            ],
        )


async def _step(store: Store, battle_id: str, from_states: str, to: str, **fields: Any) -> str:
    """Move the record (battle_step); the state it is in afterwards."""
    return (await _move(store, battle_id, from_states, to, **fields))[1]


async def _move(
    store: Store, battle_id: str, from_states: str, to: str, **fields: Any
) -> tuple[bool, str]:
    """Move the record (battle_step): whether this call moved it, and its state after."""
    pairs = [part for name, value in fields.items() for part in (name, value)]
    result = await _run(store, "battle_step", [keys.battle(battle_id)], [from_states, to, *pairs])
    if int(result[0]) != ScriptCode.OK:
        raise script_error(int(result[0]))
    return bool(int(result[1])), str(result[2])


async def _released_stale(store: Store, stream_id: str, holder: str) -> bool:
    """The stream is locked to `holder`: when that battle is over for good (or has no
    record: a crash before it was written), let the stream go. True when it did."""
    if not holder or await _lock_holds(store, holder):
        return False
    result = await _run(store, "battle_release", [keys.stream(stream_id)], [holder])
    return bool(int(result[1]))
