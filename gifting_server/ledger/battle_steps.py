"""The steps of a battle after the requests that start them (docs/battles.md): take a
battle forward from whatever state it is in (`advance`), start the invited side,
close both sides and decide the end (`finish`), publish, release, and move the
record (`battle_step`). Each is safe to repeat from any worker at any time: the
requests in battles.py call them, and so does the battle ticker of whichever
worker holds the lease (battle_ticker.py), for every battle that is due."""

from __future__ import annotations

from typing import Any

import orjson

from gifting_server.errors import ScriptCode, script_error
from gifting_server.ledger import battle_record, keys
from gifting_server.ledger.battle_record import FINAL, Record
from gifting_server.ledger.store import Store, guarded
from gifting_server.logs import audit


async def run(store: Store, script: str, keys_: list[str], args: list[Any]) -> list[Any]:
    """A battle script's reply, whatever its code (the callers decide what each means)."""
    result: list[Any] = await guarded(store.scripts.run(script, keys_, args))
    return result


async def due_at(store: Store, battle_id: str, at_ms: int, *, sooner_only: bool = False) -> None:
    due = keys.BATTLES_DUE
    flags = ("LT",) if sooner_only else ()
    await guarded(store.scripts.command(due, "ZADD", due, *flags, at_ms, battle_id))


async def recover_at(store: Store, battle_id: str) -> None:
    """Before a step a crash may cut short: any worker looks at the battle then."""
    grace = store.settings.battles.recover_after_ms
    await due_at(store, battle_id, store.clock() + grace, sooner_only=True)


async def close_unstarted(store: Store, battle_id: str, reason: str) -> Record:
    """Cancel a battle that has not started; the record as it is then. One that moved
    on meanwhile (an accept won the step) is left to go on: only a final battle's
    streams are let go."""
    await step(store, battle_id, "inviting,invited", "cancelled", reason=reason)
    record = await battle_record.read_known(store, battle_id)
    if record.status in FINAL:
        await close_for_good(store, record)
    return record


async def advance(store: Store, record: Record) -> Record:
    """Take the battle as far as it can go now; the record as it is then. Safe to run
    from any worker at any time, as often as wanted."""
    status, now = record.status, store.clock()
    if status == "inviting":
        if now >= record.number("created_at") + store.settings.battles.recover_after_ms:
            await close_unstarted(store, record.battle_id, "failed")
    elif status == "invited":
        if now >= record.number("expires_at"):
            await close_unstarted(store, record.battle_id, "expired")
    elif status == "accepting":
        await start_invited_side(store, record)
    elif status == "live":
        await finish(store, record)
    elif status in FINAL:
        await close_for_good(store, record)
    return await battle_record.read_known(store, record.battle_id)


async def start_invited_side(store: Store, record: Record) -> Record:
    """The invited stream's side, then the record `live` (steps 2 and 3 of an accept)."""
    battle_id, b = record.battle_id, record.streams[1]
    ends_at = record.number("ends_at")
    result = await run(
        store,
        "battle_start_side",
        [keys.stream(b), keys.battle_top(b)],
        [battle_id, ends_at],
    )
    if int(result[0]) != ScriptCode.OK:
        raise script_error(int(result[0]))
    await step(store, battle_id, "accepting", "live")
    await due_at(store, battle_id, ends_at)
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
        result = await run(
            store,
            "battle_close_side",
            [keys.stream(stream_id), keys.battle_top(stream_id)],
            [record.battle_id, int(early), battle_record.TOP],
        )
        code = int(result[0])
        if code == ScriptCode.BATTLE_NOT_OVER:
            await due_at(store, record.battle_id, store.clock() + int(result[1]))
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
    moved, _ = await move(
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
    (of two, the one that ended first), also when it went live again after its
    forfeit was recorded; otherwise the side with more points wins."""
    forfeits = []
    for index, reply in enumerate(closed):
        status, ended_at = str(reply[3]), str(reply[4])
        # A stream that went live again before the sides closed keeps its `ended_at`
        # and the record its forfeit: the forfeit stands.
        gone = status == "ended" or record.fields.get("forfeit") == record.streams[index]
        if gone and ended_at.isdigit() and int(ended_at) < ends_at:
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
    let go, and the battle off the due list. Every part is safe to repeat. An invite
    refused or abandoned before it was ever `invited` was never shown to anyone: its
    end is not published either (it would replace what the streams show, such as
    another pending invite)."""
    if record.fields.get("expires_at"):  # written with the move to `invited`
        await publish(store, record)
    for stream_id in record.streams:
        if stream_id:
            await run(store, "battle_release", [keys.stream(stream_id)], [record.battle_id])
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
        await run(
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


async def step(store: Store, battle_id: str, from_states: str, to: str, **fields: Any) -> str:
    """Move the record (battle_step); the state it is in afterwards."""
    return (await move(store, battle_id, from_states, to, **fields))[1]


async def move(
    store: Store, battle_id: str, from_states: str, to: str, **fields: Any
) -> tuple[bool, str]:
    """Move the record (battle_step): whether this call moved it, and its state after."""
    pairs = [part for name, value in fields.items() for part in (name, value)]
    result = await run(store, "battle_step", [keys.battle(battle_id)], [from_states, to, *pairs])
    if int(result[0]) != ScriptCode.OK:
        raise script_error(int(result[0]))
    return bool(int(result[1])), str(result[2])
