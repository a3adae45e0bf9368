"""Ending streaks (combos): a streak ends once its quiet window passed, announced
by the `close_streaks` script. Each worker closes the streaks of the streams it
serves and of those it sent gifts to lately (whose viewers may all be on other
workers); the script is atomic, so a streak still ends once when several do."""

from __future__ import annotations

import time
from collections.abc import Collection
from typing import TYPE_CHECKING

from gifting_server.ledger import keys
from gifting_server.tasks import for_each_stream

if TYPE_CHECKING:
    from gifting_server.ledger.store import Store

SWEEP_EVERY_S = 0.1
MOST_CLOSED_PER_CALL = 100


class RecentGifts:
    """The streams this worker sent gifts to, each until its streaks surely ended."""

    def __init__(self) -> None:
        self.until: dict[str, float] = {}  # stream → monotonic deadline

    def note(self, stream_id: str, window_ms: int) -> None:
        self.until[stream_id] = time.monotonic() + 2 * window_ms / 1000 + 1

    def streams(self) -> set[str]:
        now = time.monotonic()
        for stream_id, until in list(self.until.items()):
            if until < now:
                del self.until[stream_id]
        return set(self.until)


def note_gift(store: Store, stream_id: str) -> None:
    """A gift went to the stream: keep closing its streaks until they ended."""
    store.recent_gifts.note(stream_id, store.settings.limits.combo_window_ms)


async def close_streaks(store: Store, served: Collection[str]) -> None:
    """End the due streaks of the `served` streams and of those gifted to lately."""
    settings = store.settings

    async def close(stream_id: str) -> None:
        await store.run_script(
            "close_streaks",
            [keys.open_streaks(stream_id), keys.stream(stream_id), keys.stream_history(stream_id)],
            [
                store.clock(),
                settings.limits.combo_window_ms,
                settings.history.max_events,
                store.event_channel(stream_id),
                MOST_CLOSED_PER_CALL,
            ],
        )

    await for_each_stream(set(served) | store.recent_gifts.streams(), close)
