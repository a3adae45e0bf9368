"""Every event the scripts emit, of every kind, through the real scripts: it has the
envelope events.py reads, the fields of its kind, the same bytes in the history and
on pub/sub, and the same bytes as before the envelope had one builder."""

from __future__ import annotations

import orjson
import pytest

from gifting_server import events
from gifting_server.auth import Identity, Role
from gifting_server.ledger import (
    alerts,
    battle_record,
    gifts,
    goal,
    keys,
    overlay_tokens,
    stream_settings,
    streams,
)
from gifting_server.ledger.scripts import INCLUDE, SCRIPT_NAMES, script_source
from gifting_server.ledger.store import Store
from tests.factories import fund, live_stream, viewer
from tests.ledger.support import T0, FakeClock
from tests.topology import Subscription

GIFT = (
    '"sender":{"id":"alice","name":"Alice"},'
    '"gift":{"id":"finger_heart","name":"Finger Heart","coins":5,"tier":1},'
)
ROSE = '"sender":{"id":"bob","name":"Böb \\"the\\" \\\\ <b>"},"gift":{"id":"rose","name":"Rose","coins":1,"tier":1},'  # noqa: E501
# What the scripts emitted for `emit_every_kind` before the envelope had one builder.
EXPECTED = [
    '{"event_id":1,"kind":"gift","ts":1704283200000,' + GIFT
    + '"count":3,"combo":3,"streak_end":false,"coins_total":15}',
    '{"event_id":2,"kind":"gift","ts":1704283201000,' + GIFT
    + '"count":1,"combo":4,"streak_end":false,"coins_total":20}',
    '{"event_id":3,"kind":"gift","ts":1704283206000,' + GIFT
    + '"count":0,"combo":4,"streak_end":true,"coins_total":20}',
    '{"event_id":4,"kind":"gift","ts":1704283206000,' + GIFT
    + '"count":1,"combo":1,"streak_end":false,"coins_total":25}',
    '{"event_id":5,"kind":"gift","ts":1704283206000,' + ROSE
    + '"count":2,"combo":2,"streak_end":false,"coins_total":27}',
    '{"event_id":6,"kind":"gift","ts":1704283211000,' + GIFT
    + '"count":0,"combo":1,"streak_end":true,"coins_total":27}',
    '{"event_id":7,"kind":"gift","ts":1704283211000,' + ROSE
    + '"count":0,"combo":2,"streak_end":true,"coins_total":27}',
    '{"event_id":8,"kind":"viewers","ts":1704283211000,"count":2}',
    '{"event_id":9,"kind":"leaderboard","ts":1704283211000,"period":"stream","entries":['
    '{"rank":1,"user_id":"alice","name":"Alice","coins":25},'
    '{"rank":2,"user_id":"bob","name":"Böb \\"the\\" \\\\ <b>","coins":2}]}',
    '{"event_id":10,"kind":"overlay_revoked","ts":1704283211000,"generation":1}',
    '{"event_id":11,"kind":"stream_ended","ts":1704283211000}',
    '{"event_id":12,"kind":"alerts","ts":1704283211000,"action":"pause","paused":true}',
    '{"event_id":13,"kind":"goal","ts":1704283211000,"target":100,"progress":0,"title":"Go",'
    '"counted_from":27}',
    '{"event_id":14,"kind":"settings","ts":1704283211000,"messages":{"enabled":true,'
    '"min_coins":1,"max_length":150,"tts":false,"tts_min_coins":100}}',
    '{"event_id":15,"kind":"battle","ts":1704283211000,"battle_id":"bt_1.s1",'
    '"status":"declined","duration_s":60,"created_at":1704283200000,"sides":['
    '{"stream_id":"s1","streamer":{"id":"streamer1","name":"streamer1"},"points":0,"top":[]},'
    '{"stream_id":"s2","streamer":{"id":"streamer2","name":"streamer2"},"points":0,"top":[]}]}',
]  # fmt: skip


async def publish_state(store: Store, field: str, state: str, kind: str) -> None:
    await store.run_script(
        "publish_state",
        [keys.stream("s1"), keys.stream_history("s1")],
        [field, state, kind, store.clock(), store.settings.history.max_events,
         store.event_channel("s1")],
    )  # fmt: skip


async def emit_every_kind(store: Store, clock: FakeClock) -> None:
    """Gifts, a streak ended by the next gift (send_gift) and by the sweep
    (close_streaks), viewers and leaderboard (publish_state), overlay_revoked
    (rotate_overlay_tokens), stream_ended, then the streamer's controls: alerts, goal,
    settings (on the ended stream: they are allowed)."""
    await fund(store, "alice")
    await fund(store, "bob")
    await live_stream(store)
    alice, bob = viewer("alice"), viewer("bob", name='Böb "the" \\ <b>')
    finger_heart, rose = store.settings.gift("finger_heart"), store.settings.gift("rose")
    assert finger_heart is not None and rose is not None
    await gifts.run_send_gift(store, alice, "s1", finger_heart, 3, "k1")
    clock.advance(1000)
    await gifts.run_send_gift(store, alice, "s1", finger_heart, 1, "k2")
    clock.advance(5000)  # past the quiet window: this gift ends the streak first
    await gifts.run_send_gift(store, alice, "s1", finger_heart, 1, "k3")
    await gifts.run_send_gift(store, bob, "s1", rose, 2, "k4")
    clock.advance(5000)
    closed = await store.run_script(
        "close_streaks",
        [keys.open_streaks("s1"), keys.stream("s1"), keys.stream_history("s1")],
        [clock(), store.settings.limits.combo_window_ms, store.settings.history.max_events,
         store.event_channel("s1"), 100],
    )  # fmt: skip
    assert closed == [0, 2]
    await publish_state(store, "last_viewers", '"count":2', "viewers")
    await publish_state(store, "last_viewers", '"count":2', "viewers")  # unchanged: none
    entries = await streams.leaderboard(store, "s1", "stream", 10)
    body = '"period":"stream","entries":' + orjson.dumps(entries).decode()
    await publish_state(store, "last_top", body, "leaderboard")
    await overlay_tokens.mint(store, "streamer1", "s1", rotate=True)
    await streams.end_stream(store, "streamer1", "s1")
    streamer = Identity("streamer1", "Streamer One", Role.STREAMER)
    await alerts.control_alerts(store, streamer, "s1", "pause")
    await goal.set_goal(store, streamer, "s1", 100, "Go", reset=False)
    await stream_settings.change_settings(store, streamer, "s1", {})
    # a battle's state, as battle_steps.publish publishes it (a declined invite)
    fields = {"status": "declined", "a": "s1", "b": "s2", "a_streamer": "streamer1",
              "b_streamer": "streamer2", "duration_s": "60", "created_at": str(T0)}  # fmt: skip
    battle = battle_record.Record("bt_1.s1", fields)
    state = battle_record.fragment(await battle_record.view(store, battle))
    await store.run_script(
        "publish_battle",
        [keys.stream("s1"), keys.stream_history("s1")],
        ["bt_1.s1", state, 1, clock(), store.settings.history.max_events,
         store.event_channel("s1")],
    )  # fmt: skip


async def published(channel: Subscription, count: int) -> list[str]:
    found = []
    for _ in range(count):
        message = await channel.next(timeout_s=2.0)
        assert message is not None
        found.append(message["data"])
    return found


@pytest.fixture
async def emitted(store: Store) -> tuple[list[str], list[str]]:
    """(the stream's history, what was published on its channel), in order."""
    clock = store.clock = FakeClock(T0)
    channel = await Subscription.open(store.redis, keys.stream_channel("s1"))
    try:
        await emit_every_kind(store, clock)
        rows = await store.redis.xrange(keys.stream_history("s1"))
        history = [fields["e"] for _, fields in rows]
        return history, await published(channel, len(history))
    finally:
        await channel.aclose()


async def test_every_event_has_the_envelope_and_the_fields_of_its_kind(
    emitted: tuple[list[str], list[str]],
) -> None:
    history, _ = emitted
    assert {events.parse(raw)["kind"] for raw in history} == set(events.KINDS)
    for n, raw in enumerate(history, start=1):
        event = events.parse(raw)
        assert list(event) == [*events.ENVELOPE, *events.KINDS[event["kind"]]]
        assert event["event_id"] == n
        envelope = (event["event_id"], event["kind"], event["ts"])
        assert events.envelope_of(raw.encode()) == envelope
        assert events.event_id_of(raw.encode()) == n


async def test_history_and_pub_sub_carry_the_same_bytes_as_before(
    emitted: tuple[list[str], list[str]],
) -> None:
    history, sent = emitted
    assert sent == history
    assert history == EXPECTED


def test_every_script_is_loaded_with_its_includes_inlined() -> None:
    for name in SCRIPT_NAMES:
        assert INCLUDE.search(script_source(name)) is None
    assert "local function emitEvent" in script_source("send_gift")
