"""A stream's state events: its viewer count and its top gifters, each published
(into the history and to pub/sub) only when it changed since the last one any
worker published. The `publish_state` script decides that atomically."""

from __future__ import annotations

from typing import Any

import orjson

from gifting_server.ledger import keys, streams
from gifting_server.ledger.store import Store

PUBLISH_EVERY_S = 1.0
TOP_GIFTERS = 10


def fragment(state: dict[str, Any]) -> str:
    """The state as the script takes and stores it: the event body's JSON members
    without the braces (`"count":12`)."""
    return orjson.dumps(state).decode()[1:-1]


async def publish_viewers(store: Store, stream_id: str, count: int) -> None:
    await _publish(store, stream_id, "last_viewers", {"count": count}, "viewers")


async def publish_top_gifters(store: Store, stream_id: str) -> None:
    entries = await streams.leaderboard(store, stream_id, "stream", TOP_GIFTERS)
    await _publish(
        store, stream_id, "last_top", {"period": "stream", "entries": entries}, "leaderboard"
    )


async def _publish(
    store: Store, stream_id: str, field: str, state: dict[str, Any], kind: str
) -> None:
    await store.run_script(
        "publish_state",
        [keys.stream(stream_id), keys.stream_history(stream_id)],
        [
            field,
            fragment(state),
            kind,
            store.clock(),
            store.settings.history.max_events,
            store.event_channel(stream_id),
        ],
    )
