"""The streamer's scripts (control_alerts, set_goal, set_stream_settings) refuse a bad
argument or a stored number that does not parse before writing anything, and fail
their first write, changing nothing, over a history ahead of the stream's meta."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from gifting_server.auth import Identity, Role
from gifting_server.errors import ErrorCode, ScriptCode
from gifting_server.ledger import alerts, goal, keys
from gifting_server.ledger.store import Store
from tests.factories import live_stream
from tests.ledger.support import FakeClock, assert_refused, snapshot
from tests.ledger.test_script_arguments import BAD_NUMBERS, BAD_TIMES, rewind_meta

T0 = 1_704_283_200_000
STREAMER = Identity("streamer1", "Streamer One", Role.STREAMER)
Call = tuple[str, list[str], list[Any]]
FRAGMENT = '"sender":{"id":"streamer1","name":"S"},"gift":{"id":"rose"},"test":true,'


@pytest.fixture
async def ledger(store: Store) -> Store:
    store.clock = FakeClock(T0)
    await live_stream(store)
    await alerts.control_alerts(store, STREAMER, "s1", "pause")  # the history has an event
    return store


def call(script: str, store: Store, **replace: str) -> Call:
    head = ["streamer1", str(store.clock()), "1000", store.event_channel("s1")]
    names = ["streamer", "now", "history", "channel"]
    if script == "control_alerts":
        names += ["action", "replay", "fragment", "count"]
        head += ["test", "", FRAGMENT, "2"]
    elif script == "set_goal":
        names += ["target", "title", "reset"]
        head += ["100", '"Goal"', "1"]
    else:
        names += ["name", "value", "default"]
        head += ["enabled", "false", "true"]
    for name, value in replace.items():
        head[names.index(name)] = value
    return script, [keys.stream("s1"), keys.stream_history("s1")], head


SCRIPTS = ("control_alerts", "set_goal", "set_stream_settings")
BAD_CALLS: dict[str, Callable[[Store], Call]] = {}
for script in SCRIPTS:
    for bad in BAD_NUMBERS:
        BAD_CALLS[f"{script} history {bad!r}"] = lambda s, b=bad, n=script: call(n, s, history=b)
    for bad in BAD_TIMES:
        BAD_CALLS[f"{script} now {bad!r}"] = lambda s, b=bad, n=script: call(n, s, now=b)
for bad in ("dance", "", "PAUSE"):
    BAD_CALLS[f"control_alerts action {bad!r}"] = lambda s, b=bad: call(
        "control_alerts", s, action=b
    )
for bad in ("0", "-1", "1.5", ""):
    BAD_CALLS[f"control_alerts test count {bad!r}"] = lambda s, b=bad: call(
        "control_alerts", s, count=b
    )
BAD_CALLS["control_alerts test without a fragment"] = lambda s: call(
    "control_alerts", s, fragment=""
)
BAD_CALLS["control_alerts replay without an id"] = lambda s: call(
    "control_alerts", s, action="replay", replay="x"
)
for bad in ("0", "-5", "1e3", str(2**53)):
    BAD_CALLS[f"set_goal target {bad!r}"] = lambda s, b=bad: call("set_goal", s, target=b)
BAD_CALLS["set_goal title not JSON"] = lambda s: call("set_goal", s, title="Goal")
BAD_CALLS["set_goal reset 'yes'"] = lambda s: call("set_goal", s, reset="yes")
BAD_CALLS["set_stream_settings name 'A b'"] = lambda s: call("set_stream_settings", s, name="A b")
BAD_CALLS["set_stream_settings no default"] = lambda s: call("set_stream_settings", s, default="")


@pytest.mark.parametrize("bad_call", BAD_CALLS.values(), ids=BAD_CALLS.keys())
async def test_a_script_refuses_a_bad_argument_before_writing_anything(
    ledger: Store, bad_call: Callable[[Store], Call]
) -> None:
    name, script_keys, args = bad_call(ledger)
    before = await snapshot(ledger.redis)
    assert await ledger.scripts.run(name, script_keys, args) == [ScriptCode.INVALID_ARGUMENT]
    assert await snapshot(ledger.redis) == before


async def test_the_good_calls_of_this_module_go_through(ledger: Store) -> None:
    for script in SCRIPTS:
        name, script_keys, args = call(script, ledger)
        assert (await ledger.scripts.run(name, script_keys, args))[0] == 0, name


@pytest.mark.parametrize("field", ["seq", "coins", "goal_from"])
async def test_a_stored_number_that_does_not_parse_changes_nothing(
    ledger: Store, field: str
) -> None:
    await ledger.redis.hset(keys.stream("s1"), field, "12abc")
    for script in SCRIPTS if field == "seq" else ("set_goal",):
        name, script_keys, args = call(script, ledger)
        before = await snapshot(ledger.redis)
        assert await ledger.scripts.run(name, script_keys, args) == [ScriptCode.CORRUPT_VALUE]
        assert await snapshot(ledger.redis) == before


async def test_over_a_history_ahead_of_its_meta_nothing_changes(ledger: Store) -> None:
    await rewind_meta(ledger)
    await assert_refused(
        ledger, ErrorCode.STORAGE_CORRUPT, alerts.control_alerts(ledger, STREAMER, "s1", "skip")
    )
    await assert_refused(
        ledger, ErrorCode.STORAGE_CORRUPT, goal.set_goal(ledger, STREAMER, "s1", 5, "", False)
    )
