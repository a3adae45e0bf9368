"""Overlay tokens of a stream: minting them, rotating (revoking every earlier one),
and telling whether one still counts.

A stream keeps its overlay generation in its meta (`overlay_gen`, 0 until the first
rotation); an overlay token carries the generation it was minted at (claim `gen`;
tokens minted by `gifting-server token` carry none, which counts as 0, so the first
rotation revokes them too). A token below the stream's generation is revoked. The
check reads Redis when an overlay connects or subscribes, never per message: open
connections learn of a rotation from the stream's `overlay_revoked` event
(`api/overlay_guard.py`).
"""

from __future__ import annotations

from gifting_server.auth import Identity, Role, issue_token, revoked
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys, streams
from gifting_server.ledger.store import Store, guarded

GENERATION_FIELD = "overlay_gen"
REVOKED_KIND = "overlay_revoked"  # the event a rotation publishes: {"generation": n}
# An overlay link goes into OBS once and stays there: it lasts a year, unless rotated.
TOKEN_TTL_S = 365 * 86_400


async def generation(store: Store, stream_id: str) -> int:
    meta = keys.stream(stream_id)
    raw = await guarded(store.scripts.command(meta, "HGET", meta, GENERATION_FIELD))
    return int(raw or 0)


async def check(store: Store, who: Identity) -> None:
    """Raise `token_revoked` for an overlay token older than its stream's overlay tokens."""
    if who.role is not Role.OVERLAY or who.stream_id is None:
        return
    if who.generation < await generation(store, who.stream_id):
        raise revoked()


async def mint(store: Store, streamer_id: str, stream_id: str, *, rotate: bool) -> str:
    """An overlay token for the streamer's own stream, at the stream's generation; with
    `rotate`, after raising it (every earlier overlay token of the stream is revoked)."""
    if await streams.streamer_of(store, stream_id) != streamer_id:
        raise GiftingError(ErrorCode.FORBIDDEN, "this stream belongs to someone else")
    if rotate:
        current = await _rotate(store, streamer_id, stream_id)
    else:
        current = await generation(store, stream_id)
    return issue_token(
        store.settings.secret,
        streamer_id,
        Role.OVERLAY,
        stream_id=stream_id,
        ttl_s=TOKEN_TTL_S,
        generation=current,
    )


async def _rotate(store: Store, streamer_id: str, stream_id: str) -> int:
    try:
        result = await store.run_script(
            "rotate_overlay_tokens",
            [keys.stream(stream_id), keys.stream_history(stream_id)],
            [
                streamer_id,
                store.clock(),
                store.settings.history.max_events,
                store.event_channel(stream_id),
            ],
        )
    except GiftingError as e:
        if e.code is ErrorCode.NOT_STREAM_OWNER:
            raise GiftingError(ErrorCode.FORBIDDEN, e.message) from None
        raise
    return int(result[1])
