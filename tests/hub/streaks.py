"""What every streak test checks, on one worker or several."""

from __future__ import annotations

from gifting_server.ledger import keys
from tests.hub.wsclient import Event, Message
from tests.topology import async_client

STREAK_TIMEOUT_S = 10.0


def is_streak_end(event: Event) -> bool:
    return event["kind"] == "gift" and event["streak_end"] is True


async def history_of(redis_url: str, stream_id: str) -> list[bytes]:
    client = await async_client(redis_url)
    try:
        rows: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(
            keys.stream_history(stream_id)
        )  # type: ignore[assignment]
        return [fields[b"e"] for _, fields in rows]
    finally:
        await client.aclose()


async def assert_streak_closed_for_good(
    redis_url: str, stream_id: str, sender: str, gift_id: str
) -> None:
    """No open streak and no combo left in Redis: no further streak_end can come."""
    client = await async_client(redis_url)
    try:
        assert await client.zscore(keys.open_streaks(stream_id), f"{sender}:{gift_id}") is None
        assert not await client.hexists(keys.stream(stream_id), keys.combo_field(sender, gift_id))
    finally:
        await client.aclose()


def assert_one_streak(
    events: list[Event], acks: list[Message], sender: str, gift_id: str, taps: int
) -> None:
    """Combos 1..taps in the acks and the events, then exactly one streak_end."""
    assert [a["combo"] for a in acks] == list(range(1, taps + 1))
    taps_seen = [
        e
        for e in events
        if e["kind"] == "gift" and not e["streak_end"] and e["gift"]["id"] == gift_id
    ]
    assert [e["event_id"] for e in taps_seen] == [a["event_id"] for a in acks]
    assert [e["combo"] for e in taps_seen] == list(range(1, taps + 1))
    ends = [e for e in events if is_streak_end(e)]
    assert len(ends) == 1, ends
    end = ends[0]
    assert end["event_id"] > acks[-1]["event_id"]
    assert (end["combo"], end["count"]) == (taps, 0)
    assert end["sender"]["id"] == sender
    assert end["gift"]["id"] == gift_id
