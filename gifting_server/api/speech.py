"""A gift's message as speech for the alerts overlay (docs/studio.md, "Messages read
aloud"): WAV audio, when the stream reads messages aloud and the send is worth it."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from gifting_server import events
from gifting_server.api.http import checked_identity, store_of, stream_id_of
from gifting_server.auth import Identity, Role
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.ledger import keys, stream_settings, streams
from gifting_server.ledger.store import Store, guarded
from gifting_server.speech import Speech

# The event and the stream's settings may be read again: the answer is for the
# browser alone (it carries a viewer's words) and never changes for one event.
CACHE_CONTROL = "private, max-age=3600"


async def speech(request: Request) -> Response:
    who = await checked_identity(request)  # a revoked overlay token is told so
    stream_id = stream_id_of(request)
    try:
        event_id = int(request.path_params["event_id"])
    except ValueError:
        event_id = 0
    store = store_of(request)
    await _require_stream_reader(store, who, stream_id)
    event = await _gift_with_message(store, stream_id, event_id)
    settings = await stream_settings.settings_for(store, stream_id)
    if not settings.tts:
        raise GiftingError(ErrorCode.SPEECH_NOT_ALLOWED, "this stream does not read messages aloud")
    coins = int(event["gift"]["coins"]) * int(event["count"])
    if coins < settings.tts_min_coins:
        raise GiftingError(
            ErrorCode.SPEECH_NOT_ALLOWED,
            f"messages are read aloud on sends of at least {settings.tts_min_coins} coins",
        )
    engine: Speech = request.app.state.speech
    audio = await engine.wav(stream_id, event_id, str(event["message"]))
    return Response(audio, media_type="audio/wav", headers={"Cache-Control": CACHE_CONTROL})


async def _require_stream_reader(store: Store, who: Identity, stream_id: str) -> None:
    """The stream's overlay token or its streamer; `forbidden` for anyone else."""
    if who.role is Role.OVERLAY:
        if who.stream_id != stream_id:
            raise GiftingError(ErrorCode.FORBIDDEN, "this overlay token is for another stream")
        return
    await streams.require_owner(store, who, stream_id)


async def _gift_with_message(store: Store, stream_id: str, event_id: int) -> dict[str, Any]:
    history = keys.stream_history(stream_id)
    rows: Any = None
    if event_id > 0:
        # The first entry from the event's id holds it: its own, or the entry of a
        # batched call's events that ends with or after it (events.py).
        rows = await guarded(
            store.scripts.command(history, "XRANGE", history, f"{event_id}-0", "+", "COUNT", "1")
        )
    event: dict[str, Any] | None = None
    if rows:
        entry = rows[0][1][1]  # the pipeline answers RESP as is: [field, value]
        raws = events.history_events(entry.encode() if isinstance(entry, str) else entry)
        found = events.events_after(raws, event_id - 1)
        if found and events.event_id_of(found[0]) == event_id:
            event = events.parse(found[0])
    if event is None or event.get("kind") != "gift" or not event.get("message"):
        raise GiftingError(
            ErrorCode.UNKNOWN_EVENT,
            f"no gift with a message has event id {event_id} in this stream's history",
        )
    return event


routes = [Route("/v1/streams/{stream_id}/speech/{event_id}", speech)]
