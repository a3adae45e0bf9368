"""Alert control: the streamer pauses, resumes, skips, clears or replays the alerts
of every open alerts overlay of a stream, or sends a test alert.

Each is one event on the stream (`lua/control_alerts.lua`): an `alerts` event, or
for a test a `gift` event marked `test: true` that moves no money and touches no
board, combo, goal or journal (only the history and the publish)."""

from __future__ import annotations

from gifting_server.auth import Identity
from gifting_server.errors import ErrorCode, GiftingError
from gifting_server.fields import invalid
from gifting_server.ledger.gifts import event_fragment
from gifting_server.ledger.store import Store
from gifting_server.ledger.streams import run_stream_control

ACTIONS = ("pause", "resume", "skip", "clear", "replay", "test")


async def control_alerts(
    store: Store,
    who: Identity,
    stream_id: str,
    action: str,
    *,
    event_id: int | None = None,
    gift_id: str | None = None,
    count: int = 1,
) -> int:
    """Emit the action's event; answers its event id. `event_id`: the gift a replay
    shows again (`unknown_event` when it is no gift in the stream's history);
    `gift_id` and `count`: a test's gift (`unknown_gift` when not in the catalog)."""
    if action not in ACTIONS:
        raise invalid(f"action must be one of {', '.join(ACTIONS)}")
    fragment, replay, test_count = "", "", ""
    if action == "replay":
        if event_id is None:
            raise invalid("a replay needs event_id, the gift event to show again")
        replay = str(event_id)
    if action == "test":
        if gift_id is None:
            raise invalid("a test needs gift_id, a gift of the catalog")
        gift = store.settings.gift(gift_id)
        if gift is None:
            raise GiftingError(ErrorCode.UNKNOWN_GIFT, f"no gift {gift_id!r} in the catalog")
        fragment, test_count = event_fragment(who, gift, test=True), str(count)
    result = await run_stream_control(
        store, who, stream_id, "control_alerts", [action, replay, fragment, test_count]
    )
    return int(result[1])
