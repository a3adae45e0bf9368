"""Streams: going live, ending, who owns a stream, and its leaderboards."""

from __future__ import annotations

from typing import Any

from gifting_server import events
from gifting_server.auth import Identity, Role
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import battles, keys
from gifting_server.ledger.clock import day_number, week_number
from gifting_server.ledger.store import Store, guarded
from gifting_server.logs import audit

# The leaderboard periods, for the API, its schema and the leaderboard overlay.
PERIODS = ("stream", "day", "week", "all")


async def streamer_of(store: Store, stream_id: str) -> str:
    """The owner of a stream (remembered by the store: owners never change)."""
    cache = store.streamers
    streamer = cache.get(stream_id)
    if streamer is None:
        # Through the script pipeline: a burst of first gifts to many streams must not
        # open a connection each (a cluster client's pool does not queue past its cap).
        meta = keys.stream(stream_id)
        raw = await guarded(store.scripts.command(meta, "HGET", meta, "streamer"))
        if raw is None:
            raise GiftingError(ErrorCode.UNKNOWN_STREAM, "no such stream")
        streamer = str(raw)
        if len(cache) > 100_000:
            cache.clear()
        cache[stream_id] = streamer
    return streamer


async def require_owner(store: Store, who: Identity, stream_id: str) -> None:
    """Only the stream's streamer may run it: `forbidden` for any other token (a
    viewer's, an overlay's, another streamer's), `unknown_stream` for no stream."""
    who.require(Role.STREAMER)
    if await streamer_of(store, stream_id) != who.user_id:
        raise GiftingError(ErrorCode.FORBIDDEN, "this stream belongs to another streamer")


async def run_stream_control(
    store: Store, who: Identity, stream_id: str, script: str, args: list[Any]
) -> list[Any]:
    """A streamer's control of their stream (alerts, goal, settings): the owner checked,
    then `script` run on the stream's meta and history with what every such script takes
    first (streamer, now, history cap, channel), then `args`."""
    await require_owner(store, who, stream_id)
    common = [
        who.user_id,
        store.clock(),
        store.settings.history.max_events,
        store.event_channel(stream_id),
    ]
    stream_keys = [keys.stream(stream_id), keys.stream_history(stream_id)]
    return await store.run_script(script, stream_keys, [*common, *args])


async def start_stream(
    store: Store, streamer_id: str, stream_id: str, streamer_name: str = ""
) -> bool:
    """Go live. True when the stream was created or reopened, False when it was live already.
    `streamer_name` (the token's display name) is what viewers' pages show for the host."""
    result = await store.run_script(
        "start_stream",
        [keys.stream(stream_id), keys.stream_history(stream_id)],
        [streamer_id, store.clock(), streamer_name],
    )
    started = int(result[1]) != 0
    if started:
        audit("stream_started", stream_id=stream_id, streamer_id=streamer_id)
    return started


async def end_stream(store: Store, streamer_id: str, stream_id: str) -> int:
    """End a live stream; its event id (0: it had ended already). A stream in a battle
    forfeits it (an invite is cancelled): also when ending it is repeated, so that a
    crash between the two steps is mended by the streamer's retry."""
    result = await store.run_script(
        "end_stream",
        [keys.stream(stream_id), keys.stream_history(stream_id)],
        [
            streamer_id,
            store.clock(),
            store.settings.history.max_events,
            store.event_channel(stream_id),
        ],
    )
    event_id = int(result[1])
    if len(result) > 2 and result[2]:
        await battles.stream_ended(store, stream_id, str(result[2]))
    if event_id:  # 0: it had ended already
        audit("stream_ended", stream_id=stream_id, streamer_id=streamer_id, event_id=event_id)
    return event_id


async def stream_status(store: Store, stream_id: str) -> dict[str, Any]:
    streamer, status, coins, paused, goal, name, battle = await guarded(
        store.redis.hmget(
            keys.stream(stream_id),
            "streamer",
            "status",
            "coins",
            "alerts_paused",
            "goal",
            "streamer_name",
            "battle_lock",
        )
    )
    if streamer is None:
        raise GiftingError(ErrorCode.UNKNOWN_STREAM, "no such stream")
    return {
        "stream_id": stream_id,
        "streamer_id": str(streamer),
        "streamer_name": str(name) if name else str(streamer),
        "status": str(status) if status else "ended",
        "coins_total": int(coins or 0),
        "alerts_paused": paused == "1",
        "goal": events.goal_state(goal, int(coins or 0)),
        "battle_id": str(battle) if battle else None,
    }


async def leaderboard(
    store: Store, stream_id: str, period: str, limit: int, now_ms: int | None = None
) -> list[dict[str, Any]]:
    now = store.clock() if now_ms is None else now_ms
    streamer = await streamer_of(store, stream_id)  # also: an unknown stream is refused
    if period == "week":
        rows = (await _week_board(store, streamer, now))[:limit]
    else:
        if period == "stream":
            board = keys.stream_leaderboard(stream_id)
        else:
            bucket = day_number(now) if period == "day" else None
            board = keys.channel_leaderboard(streamer, period, bucket)
        rows = await guarded(
            store.redis.zrevrange(board, 0, limit - 1, withscores=True)  # type: ignore[arg-type]
        )
    return await _with_names(store, rows)


async def _week_board(store: Store, streamer: str, now: int) -> list[tuple[str, float]]:
    """The sum of the week's day boards, best first (the gift path keeps no week board)."""
    monday = week_number(now) * 7 - 3  # week_number counts from the Monday before day 0
    days = [keys.channel_leaderboard(streamer, "day", monday + i) for i in range(7)]
    rows: list[tuple[str, float]] = await guarded(
        store.redis.zunion(days, withscores=True)  # type: ignore[arg-type]
    )
    return rows[::-1]  # ZUNION is lowest first; reversed, ties fall as in ZREVRANGE


async def _with_names(store: Store, rows: list[tuple[str, float]]) -> list[dict[str, Any]]:
    if not rows:
        return []
    async with store.redis.pipeline(transaction=False) as pipe:
        for member, _ in rows:
            pipe.hget(keys.wallet(member), "name")
        names: list[str | None] = await guarded(pipe.execute())
    return [
        {"rank": rank, "user_id": member, "name": name or member, "coins": int(score)}
        for rank, ((member, score), name) in enumerate(zip(rows, names, strict=True), start=1)
    ]
