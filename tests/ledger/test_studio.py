"""The streamer's controls against real Redis, on both gift paths: alert control
and test alerts, the server-held goal, message settings and gift messages."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
import pytest

from gifting_server.auth import Identity, Role
from gifting_server.errors import ErrorCode
from gifting_server.ledger import alerts, gifts, goal, keys, stream_settings, streams
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import FakeClock, assert_refused, snapshot

STREAMER = Identity("streamer1", "Streamer One", Role.STREAMER)
ALICE = viewer("alice")
T0 = 1_767_225_600_000


async def history(store: Store, stream_id: str = "s1") -> list[dict[str, Any]]:
    rows = await store.redis.xrange(keys.stream_history(stream_id))
    return [orjson.loads(fields["e"]) for _, fields in rows]


async def gift(store: Store, key: str, count: int = 1, message: str | None = None) -> int:
    receipt = await gifts.send_gift(store, ALICE, "s1", "rose", count, key, message=message)
    return receipt.event_id


@pytest.fixture
async def live(store: Store) -> Store:
    store.clock = FakeClock(T0)
    await fund(store, "alice")
    await live_stream(store)
    return store


async def test_each_alert_action_is_one_event_in_the_history(live: Store) -> None:
    for action in ("pause", "skip", "clear", "resume"):
        await alerts.control_alerts(live, STREAMER, "s1", action)
    shown = [(e["kind"], e["action"], e["paused"]) for e in await history(live)]
    assert shown == [
        ("alerts", "pause", True),
        ("alerts", "skip", True),
        ("alerts", "clear", True),
        ("alerts", "resume", False),
    ]
    assert (await streams.stream_status(live, "s1"))["alerts_paused"] is False
    await alerts.control_alerts(live, STREAMER, "s1", "pause")
    assert (await streams.stream_status(live, "s1"))["alerts_paused"] is True


async def test_a_replay_carries_the_gift_as_it_was(live: Store) -> None:
    sent = await gift(live, "k1")
    replayed = await alerts.control_alerts(live, STREAMER, "s1", "replay", event_id=sent)
    events = await history(live)
    assert events[-1]["event_id"] == replayed
    assert events[-1]["event"] == next(e for e in events if e["event_id"] == sent)


async def test_a_replay_of_anything_but_a_gift_in_the_history_changes_nothing(
    live: Store,
) -> None:
    paused = await alerts.control_alerts(live, STREAMER, "s1", "pause")
    for event_id in (paused, paused + 1, 10**9):
        await assert_refused(
            live,
            ErrorCode.UNKNOWN_EVENT,
            alerts.control_alerts(live, STREAMER, "s1", "replay", event_id=event_id),
        )


async def test_a_test_alert_moves_no_money_and_touches_no_board_goal_or_combo(
    live: Store,
) -> None:
    await gift(live, "k1", 3)
    await goal.set_goal(live, STREAMER, "s1", 100, "Road", reset=False)
    before = await snapshot(live.redis)
    event_id = await alerts.control_alerts(
        live, STREAMER, "s1", "test", gift_id="universe", count=2
    )
    after = await snapshot(live.redis)
    meta, history_key = keys.stream("s1"), keys.stream_history("s1")
    # Only the stream's event counter and its history changed: no wallet, board,
    # journal, combo, streak, goal or idempotency record.
    assert {k for k in after if after[k] != before.get(k)} == {meta, history_key}
    assert dict(after[meta][1]) == {**dict(before[meta][1]), "seq": str(event_id)}
    event = (await history(live))[-1]
    assert event["test"] is True and event["kind"] == "gift"
    assert event["sender"] == {"id": "streamer1", "name": "Streamer One"}
    assert (event["gift"]["id"], event["count"], event["combo"]) == ("universe", 2, 2)
    assert event["streak_end"] is True
    assert event["coins_total"] == 3  # the stream's, unchanged
    status = await streams.stream_status(live, "s1")
    assert status["goal"]["progress"] == 0 and status["coins_total"] == 3


async def test_a_test_alert_of_a_gift_not_in_the_catalog_is_refused(live: Store) -> None:
    await assert_refused(
        live,
        ErrorCode.UNKNOWN_GIFT,
        alerts.control_alerts(live, STREAMER, "s1", "test", gift_id="no_such_gift"),
    )


async def test_only_the_streamer_of_the_stream_controls_it(live: Store) -> None:
    other = Identity("streamer2", "Two", Role.STREAMER)
    overlay = Identity("streamer1", "One", Role.OVERLAY, stream_id="s1")
    for who in (other, ALICE, overlay):
        await assert_refused(
            live, ErrorCode.FORBIDDEN, alerts.control_alerts(live, who, "s1", "pause")
        )
        await assert_refused(
            live, ErrorCode.FORBIDDEN, goal.set_goal(live, who, "s1", 10, "", reset=False)
        )
    await assert_refused(
        live, ErrorCode.UNKNOWN_STREAM, alerts.control_alerts(live, STREAMER, "nope", "pause")
    )


async def test_the_goal_counts_from_when_it_was_set_and_keeps_counting_until_reset(
    live: Store,
) -> None:
    await gift(live, "k1", 5)  # before any goal: not counted
    first = await goal.set_goal(live, STREAMER, "s1", 100, "Road to 100", reset=False)
    assert (first.progress, first.counted_from) == (0, 5)
    await gift(live, "k2", 7)
    moved = await goal.set_goal(live, STREAMER, "s1", 50, "Half", reset=False)
    assert (moved.target, moved.progress, moved.title) == (50, 7, "Half")
    reset = await goal.set_goal(live, STREAMER, "s1", 50, "Half", reset=True)
    assert (reset.progress, reset.counted_from) == (0, 12)
    event = (await history(live))[-1]
    assert event == {
        "event_id": event["event_id"],
        "kind": "goal",
        "ts": T0,
        "target": 50,
        "progress": 0,
        "title": "Half",
        "counted_from": 12,
    }
    await gift(live, "k3", 2)
    status = await streams.stream_status(live, "s1")
    assert status["goal"] == {"target": 50, "title": "Half", "counted_from": 12, "progress": 2}


@pytest.mark.parametrize("target", [0, -1, 2**53, 1.5, "100", True, None])
async def test_an_absurd_goal_target_changes_nothing(live: Store, target: Any) -> None:
    await assert_refused(
        live, ErrorCode.INVALID_REQUEST, goal.set_goal(live, STREAMER, "s1", target, "", False)
    )


@pytest.mark.parametrize("title", ["x" * 81, "bad\ntitle", "zero\u200bwidth", "\x00"])
async def test_a_goal_title_too_long_or_with_controls_changes_nothing(
    live: Store, title: str
) -> None:
    await assert_refused(
        live, ErrorCode.INVALID_REQUEST, goal.set_goal(live, STREAMER, "s1", 10, title, False)
    )


async def change(store: Store, **messages: Any) -> stream_settings.MessageSettings:
    checked = stream_settings.parse_change({"messages": messages}, store.settings.messages)
    return await stream_settings.change_settings(store, STREAMER, "s1", checked)


async def test_a_message_rides_in_the_gift_event_trimmed_and_masked(live: Store) -> None:
    await change(live, blocked_words=["Darn", "heck"])
    await gift(live, "k1", message="  Oh DÄRN,\nwhat the h\u0308eck!\u202e  ")
    event = (await history(live))[-1]
    assert event["message"] == "Oh ****, what the *****!"
    assert list(event)[:6] == ["event_id", "kind", "ts", "sender", "gift", "message"]
    raw = b"".join(
        fields["e"].encode() for _, fields in await live.redis.xrange(keys.stream_history("s1"))
    )
    assert b"rn" not in raw.lower() and b"eck" not in raw.lower()


async def test_an_empty_message_is_no_message(live: Store) -> None:
    await gift(live, "k1", message=" \n\t ")
    assert "message" not in (await history(live))[-1]


async def test_a_message_is_refused_when_off_below_the_minimum_or_too_long(
    live: Store,
) -> None:
    await change(live, max_length=5, min_coins=2)
    refusals = [
        (ErrorCode.MESSAGE_NOT_ALLOWED, 1, "hi"),  # 1 coin, below 2
        (ErrorCode.INVALID_REQUEST, 2, "sixsix"),  # 6 characters after trimming
    ]
    for code, count, text in refusals:
        await assert_refused(live, code, gift(live, f"k-{count}", count, text))
    await gift(live, "k-ok", 2, "  12345  ")  # 5 once trimmed
    await change(live, enabled=False)
    await assert_refused(live, ErrorCode.MESSAGE_NOT_ALLOWED, gift(live, "k-off", 2, "hi"))
    await gift(live, "k-none", 2)  # no message: messages off does not stop a gift


async def test_the_same_key_with_another_message_is_a_conflict(live: Store) -> None:
    first = await gift(live, "k1", message="hello")
    assert await gift(live, "k1", message="hello") == first  # the same request again
    await assert_refused(live, ErrorCode.IDEMPOTENCY_CONFLICT, gift(live, "k1", message="bye"))
    await assert_refused(live, ErrorCode.IDEMPOTENCY_CONFLICT, gift(live, "k1"))
    await gift(live, "k2")
    await assert_refused(live, ErrorCode.IDEMPOTENCY_CONFLICT, gift(live, "k2", message="hi"))


async def test_a_retry_answers_the_first_result_after_the_settings_changed(
    live: Store,
) -> None:
    first = await gift(live, "k1", message="hello")
    await change(live, enabled=False)
    assert await gift(live, "k1", message="hello") == first
    await assert_refused(live, ErrorCode.IDEMPOTENCY_CONFLICT, gift(live, "k1", message="bye"))
    await assert_refused(live, ErrorCode.MESSAGE_NOT_ALLOWED, gift(live, "k2", message="hello"))
    assert [e.get("message") for e in await history(live) if e["kind"] == "gift"] == ["hello"]


async def test_a_settings_change_reaches_another_worker_within_the_cache_time(
    live: Store,
) -> None:
    assert live.settings.redis_url
    other = Store(live.redis, live.settings)  # a second worker's view of the same Redis
    clock = other.clock = FakeClock(T0)
    await gifts.send_gift(other, ALICE, "s1", "rose", 1, "k1", message="one")  # caches "on"
    await change(live, enabled=False)
    with pytest.raises(Exception) as refused_here:
        await gift(live, "k2", message="two")  # the worker that took the change: at once
    assert getattr(refused_here.value, "code", None) is ErrorCode.MESSAGE_NOT_ALLOWED
    # The other worker may use what it read for settings_cache_ms, and no longer.
    clock.advance(live.settings.messages.settings_cache_ms)
    await assert_refused(
        other,
        ErrorCode.MESSAGE_NOT_ALLOWED,
        gifts.send_gift(other, ALICE, "s1", "rose", 1, "k3", message="three"),
    )


async def test_settings_are_answered_whole_and_their_event_hides_the_blocked_words(
    live: Store,
) -> None:
    answered = await change(live, blocked_words=["secret", "Secret"], tts=True)
    assert answered.as_dict() == {
        **dataclasses.asdict(stream_settings.MessageSettings.defaults(live.settings.messages)),
        "blocked_words": ["secret"],
        "tts": True,
    }
    event = (await history(live))[-1]
    assert event["kind"] == "settings"
    assert event["messages"] == answered.public()
    assert "secret" not in orjson.dumps(event).decode()
    assert await stream_settings.read_settings(live, "s1") == answered


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"messages": []},
        {"messages": {"colour": "red"}},
        {"messages": {"enabled": 1}},
        {"messages": {"min_coins": -1}},
        {"messages": {"min_coins": 2**53}},
        {"messages": {"max_length": 0}},
        {"messages": {"max_length": 501}},
        {"messages": {"tts_min_coins": 1.5}},
        {"messages": {"blocked_words": "darn"}},
        {"messages": {"blocked_words": ["ok", 3]}},
        {"messages": {"blocked_words": [" \n "]}},
        {"messages": {"blocked_words": ["x" * 51]}},
        {"messages": {"blocked_words": [f"w{i}" for i in range(201)]}},
        {"messages": {}, "other": 1},
    ],
)
def test_bad_settings_are_refused_with_a_message(live: Store, body: dict[str, Any]) -> None:
    with pytest.raises(Exception) as refused:
        stream_settings.parse_change(body, live.settings.messages)
    assert getattr(refused.value, "code", None) is ErrorCode.INVALID_REQUEST
