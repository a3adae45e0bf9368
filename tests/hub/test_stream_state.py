"""What `subscribed` tells of a stream's state (sans I/O): the room follows the
alerts, goal and gift events it takes; a test alert moves no goal."""

from __future__ import annotations

from typing import Any

import orjson

from gifting_server.hub.stream_state import StreamState


def raw(event_id: int, kind: str, **fields: Any) -> bytes:
    return orjson.dumps({"event_id": event_id, "kind": kind, "ts": 1, **fields})


def gift(event_id: int, coins_total: int, **more: Any) -> bytes:
    return raw(event_id, "gift", coins_total=coins_total, **more)


def test_a_stream_with_nothing_set_is_playing_with_no_goal() -> None:
    assert StreamState().subscribed_fields() == {
        "alerts_paused": False,
        "goal": None,
        "battle": None,
    }
    assert StreamState.stored(None, None, None) == StreamState()


def test_the_stored_state_is_where_a_room_starts() -> None:
    state = StreamState.stored(b"1", b'"target":50,"title":"Mic","counted_from":10', b"25")
    assert state.subscribed_fields() == {
        "alerts_paused": True,
        "goal": {"target": 50, "title": "Mic", "counted_from": 10, "progress": 15},
        "battle": None,
    }


def test_the_state_follows_alerts_goal_and_gift_events_but_not_test_gifts() -> None:
    state = StreamState()
    state.take("gift", gift(1, 7))  # no goal yet: not even read
    state.take("alerts", raw(2, "alerts", action="pause", paused=True))
    state.take("goal", raw(3, "goal", target=100, progress=0, title="", counted_from=7))
    state.take("gift", gift(4, 12))
    state.take("gift", gift(5, 99, test=True, count=1))  # never counted
    state.take("alerts", raw(6, "alerts", action="skip", paused=True))
    assert state.subscribed_fields() == {
        "alerts_paused": True,
        "goal": {"target": 100, "title": "", "counted_from": 7, "progress": 5},
        "battle": None,
    }
    state.take("alerts", raw(7, "alerts", action="resume", paused=False))
    assert state.subscribed_fields()["alerts_paused"] is False


def test_a_stored_goal_that_does_not_parse_is_no_goal() -> None:
    for stored in (b"{", b'"target":5', b'"counted_from":"7"'):
        assert StreamState.stored(None, stored, b"3").goal is None


def test_the_state_keeps_the_last_battle_event_and_starts_from_the_stored_one() -> None:
    body = {"battle_id": "bt_1.s1", "status": "live", "sides": []}
    stored = orjson.dumps(body).decode()[1:-1].encode()
    assert StreamState.stored(None, None, None, stored).battle == body
    state = StreamState()
    state.take("battle", raw(1, "battle", **{**body, "status": "ended", "winner": None}))
    assert state.subscribed_fields()["battle"] == {**body, "status": "ended", "winner": None}
