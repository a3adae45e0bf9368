"""events.py: the envelope readers agree with a full parse, whatever the key order."""

from __future__ import annotations

import orjson
import pytest

from gifting_server import events

GIFT = (
    b'{"event_id":42,"kind":"gift","ts":1704283200000,"sender":{"id":"alice","name":"Alice"},'
    b'"gift":{"id":"rose","name":"Rose","coins":1,"tier":1},"count":1,"combo":1,'
    b'"streak_end":false,"coins_total":1}'
)
ENDED = b'{"event_id":7,"kind":"stream_ended","ts":1704283200001}'


def reordered(raw: bytes) -> bytes:
    """The same event with its keys in reverse order."""
    return orjson.dumps(dict(reversed(orjson.loads(raw).items())))


@pytest.mark.parametrize("raw", [GIFT, ENDED], ids=["gift", "stream_ended"])
def test_the_readers_take_the_envelope_the_scripts_build(raw: bytes) -> None:
    event = events.parse(raw)
    assert events.event_id_of(raw) == event["event_id"]
    assert events.ts_of(raw) == event["ts"]
    assert events.envelope_of(raw) == (event["event_id"], event["kind"], event["ts"])


def test_a_key_reorder_does_not_break_event_id_of() -> None:
    raw = reordered(GIFT)
    assert not raw.startswith(b'{"event_id":')
    assert events.event_id_of(raw) == 42
    assert events.ts_of(raw) == 1704283200000
    assert events.envelope_of(raw) == (42, "gift", 1704283200000)


def test_spaces_and_a_late_event_id_are_parsed_too() -> None:
    raw = b'{ "kind" : "viewers", "count": 3, "ts": 5, "event_id" : 9 }'
    assert events.event_id_of(raw) == 9
    assert events.envelope_of(raw) == (9, "viewers", 5)


def test_an_id_that_does_not_fit_the_framing_is_parsed() -> None:
    raw = b'{"event_id":12 ,"kind":"viewers","ts":5,"count":3}'
    assert events.event_id_of(raw) == 12


@pytest.mark.parametrize(
    "raw",
    [b"[]", b'{"kind":"gift","ts":1}', b'{"event_id":"1","kind":"gift","ts":1}',
     b'{"event_id":1,"kind":"gift"}', b"not json"],
    ids=["list", "no id", "string id", "no ts", "garbage"],
)  # fmt: skip
def test_what_lacks_the_envelope_is_refused(raw: bytes) -> None:
    with pytest.raises(ValueError):
        events.parse(raw)
    with pytest.raises(ValueError):
        events.envelope_of(raw)


def test_count_in_counts_the_events_of_a_frame() -> None:
    frame = b'{"type":"events","stream_id":"s1","events":[' + GIFT + b"," + ENDED + b"]}"
    assert events.count_in(frame, 0, len(frame)) == 2
    assert len(orjson.loads(frame)["events"]) == 2


def test_a_published_message_gives_its_events_in_order_and_one_event_is_itself() -> None:
    one = b'{"event_id":1,"kind":"gift","ts":5,"sender":{"id":"a","name":"A\\nB"}}'
    two = b'{"event_id":2,"kind":"stream_ended","ts":6}'
    assert events.published(one) == [one]  # an escaped newline is not a line break
    assert events.published(one + b"\n" + two) == [one, two]
    assert [events.event_id_of(e) for e in events.published(two + b"\n" + one)] == [2, 1]
