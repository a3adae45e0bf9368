"""The stream event envelope: what every event carries, its kinds, and how to read it.

An event is one JSON object, built in Redis by the Lua that emits it
(`ledger/lua/include/event.lua`, the only builder), appended to the stream's
history, published, and spliced as it is into the `events` frames clients get.
Every event has `event_id` (the stream's sequence: 1, 2, 3, ...), `kind` and
`ts` (unix ms on the server when it was made), then the fields of its kind.

The builder writes the envelope first and in this order,
`{"event_id":<digits>,"kind":"<kind>","ts":<digits>` then `,<fields>}` or `}`.
A published message holds one event, or several, one a line: `send_gifts` publishes
the events of one call to one stream as one message, the events in their order
joined by "\n" (an event is JSON without a raw newline). `published` splits a
message back into its events; a message of one event, as every other script and
every older worker publishes, is that one event.

The stream's history (a Redis Stream) holds an event an entry, its id
"<event_id>-0", field "e"; or, for the events of one batched call to one stream after
its first (`send_gifts`, `credit_stream_batch`), one entry for them all: the events
one a line, as a message, the entry's id its last event's. `history_events` splits
an entry, `events_after` drops what a read from an entry's id brought from before it.

The readers below take that framing when they find it, since the hub reads the
id of every event it takes and a full parse costs several times more; anything
else (keys in another order, spaces) is parsed as JSON. Sans I/O, for `ledger/`,
`hub/`, metrics and the benchmark clients alike.
"""

from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

ENVELOPE = ("event_id", "kind", "ts")

# The fields of each kind after the envelope (CONTRACT.md, docs/websocket.md).
KINDS: dict[str, tuple[str, ...]] = {
    "gift": ("sender", "gift", "count", "combo", "streak_end", "coins_total"),
    "viewers": ("count",),
    "leaderboard": ("period", "entries"),
    "stream_ended": (),
    "overlay_revoked": ("generation",),
    "alerts": ("action", "paused"),
    "goal": ("target", "progress", "title", "counted_from"),
    "settings": ("messages",),
    # the public body of a battle (ledger/battle_record.py, docs/battles.md)
    "battle": ("battle_id", "status", "duration_s", "created_at", "sides"),
}
# Fields some events of a kind carry, after the fields above or (gift) among them:
# a gift's `message` and `test` come after `gift`; `event` ends an alerts replay; a
# battle's `expires_at` (invited) and `ends_at` (from the accept on) come before
# `sides`, its `winner` (ended) and `reason` (closed) after them.
OPTIONAL_FIELDS: dict[str, tuple[str, ...]] = {
    "gift": ("message", "test"),
    "alerts": ("event",),
    "battle": ("expires_at", "ends_at", "winner", "reason"),
}

_ID_START = b'{"event_id":'
_ID_DIGITS = len(_ID_START)
_HEAD = re.compile(rb'\{"event_id":(\d{1,15}),"kind":"([a-z_]{1,32})","ts":(\d{1,15})[,}]')


class Envelope(NamedTuple):
    event_id: int
    kind: str
    ts: int


def parse(raw: bytes | str) -> dict[str, Any]:
    """The whole event, checked to have the envelope."""
    return checked(orjson.loads(raw))


def checked(event: Any) -> dict[str, Any]:
    """A decoded event (from a frame, say) when it has the envelope."""
    if not (
        isinstance(event, dict)
        and type(event.get("event_id")) is int
        and isinstance(event.get("kind"), str)
        and type(event.get("ts")) is int
    ):
        raise ValueError("not a stream event: it lacks event_id, kind or ts")
    return event


def envelope_of(raw: bytes) -> Envelope:
    head = _HEAD.match(raw)
    if head is not None:
        return Envelope(int(head[1]), head[2].decode(), int(head[3]))
    event = parse(raw)
    return Envelope(event["event_id"], event["kind"], event["ts"])


def event_id_of(raw: bytes) -> int:
    # Once per event each worker takes, and per event a joining batch skips: the
    # framing's id, read without a regex, costs about as much as the old byte reader.
    if raw.startswith(_ID_START):
        end = raw.find(b",", _ID_DIGITS, _ID_DIGITS + 16)
        digits = raw[_ID_DIGITS:end]
        if end > 0 and digits.isdigit():
            return int(digits)
    return envelope_of(raw).event_id


def ts_of(raw: bytes) -> int:
    return envelope_of(raw).ts


def count_in(data: bytes, start: int, end: int) -> int:
    """How many events `data[start:end]` holds, in a frame of events as the builder
    writes them (each starts with its envelope): for clients that must not decode."""
    return data.count(_ID_START, start, end)


def published(message: bytes) -> list[bytes]:
    """The events of one pub/sub message, in order (see above)."""
    return message.split(b"\n")


def history_events(entry: bytes) -> list[bytes]:
    """The events of one history entry (its field "e"), in order: the framing of a
    published message (see above)."""
    return published(entry)


def events_after(events: list[bytes], since: int) -> list[bytes]:
    """`events` without those up to `since`: a read of the history from an id may
    begin inside an entry of several events, some of them before it."""
    for at, raw in enumerate(events):
        if event_id_of(raw) > since:
            return events[at:] if at else events
    return []


def goal_state(stored: str | bytes | None, coins_total: int) -> dict[str, Any] | None:
    """A stream's goal as a subscriber gets it: {target, title, counted_from, progress}
    from the meta field "goal" (`ledger/lua/set_goal.lua` writes its JSON members
    without braces) and the stream's coins_total; None when no goal is set."""
    if not stored:
        return None
    text = stored if isinstance(stored, bytes) else stored.encode()
    try:
        goal = orjson.loads(b"{" + text + b"}")
    except orjson.JSONDecodeError:
        return None  # not what set_goal writes: as if no goal were set
    if not (isinstance(goal, dict) and type(goal.get("counted_from")) is int):
        return None
    goal["progress"] = max(0, coins_total - goal["counted_from"])
    return goal
