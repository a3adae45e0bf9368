"""Fuzz /v1/ws with hypothesis: random, malformed and almost-right frames in either
subprotocol, as text or binary. The server never answers with a traceback and
never falls over: each frame gets exactly one answer (an `error` frame when it is
refused) or the connection closes with a documented code; and since the fuzzing
viewer holds no coins, no frame changes any money."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgpack
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from gifting_server.auth import Role
from gifting_server.errors import ErrorCode
from gifting_server.protocol import Encoding, ProtocolError, SendGift, decode_client_message
from tests.conftest import ServerThread, make_settings
from tests.factories import auth, token
from tests.faults import money_state_sync
from tests.faults.conftest import FAULT_DEFAULTS
from tests.hub.wsclient import assert_no_traceback, ws_url
from tests.topology import on_cluster, sync_client

MAX_MESSAGE_BYTES = 4096
# Fewer on the cluster's run: the frames are read and refused by the same code over
# either Redis; the cluster's run checks that what they refuse changes nothing there.
EXAMPLES = 50 if on_cluster() else 200
# Close codes a client may get for what it sent (docs/websocket.md): a text frame
# that is not UTF-8, message too big, flooding.
DOCUMENTED_CLOSES = {1007, 1009, 4008}
ANSWERS = {"error", "ack", "subscribed", "unsubscribed", "pong"}
ERROR_CODES = {e.code for e in ErrorCode}

# -- frames ---------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=40),
    st.sampled_from(["s1", "rose", "gift-1", "", "../s1", "a" * 65, "🌹", "s1\x00"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=8,
)
message_ids = st.from_regex(r"\A[A-Za-z0-9_.:-]{1,12}\Z")
streams = st.sampled_from(["s1", "s2", "nope"])
# Client messages that decode: the refusals come from the rules, not the parser.
well_formed = st.one_of(
    st.fixed_dictionaries(
        {
            "type": st.just("gift"),
            "id": message_ids,
            "stream_id": streams,
            "gift_id": st.sampled_from(["rose", "universe", "unicorn"]),
        },
        optional={"count": st.integers(min_value=-1, max_value=120)},
    ),
    st.fixed_dictionaries(
        {"type": st.just("subscribe"), "stream_id": streams},
        optional={"since": st.integers(min_value=-1, max_value=50)},
    ),
    st.fixed_dictionaries({"type": st.just("unsubscribe"), "stream_id": streams}),
    st.just({"type": "ping"}),
)
# Objects shaped like client messages, each field right, wrong or missing.
messages = st.fixed_dictionaries(
    {"type": st.sampled_from(["subscribe", "unsubscribe", "gift", "ping", "dance"]) | values},
    optional={
        "stream_id": st.sampled_from(["s1", "s2", "nope"]) | values,
        "since": st.integers(min_value=-5, max_value=2**64) | values,
        "id": message_ids | values,
        "gift_id": st.sampled_from(["rose", "universe", "unicorn"]) | values,
        "count": st.integers(min_value=-3, max_value=2**60) | values,
    },
)


def as_json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):  # integers past 64 bits
        return repr(value).encode()


def as_msgpack(value: Any) -> bytes:
    try:
        packed: bytes = msgpack.packb(value, use_bin_type=True)
        return packed
    except (TypeError, ValueError, OverflowError):
        return repr(value).encode()


# (payload, sent as a text frame?)
payloads = st.one_of(well_formed, messages, values)
frames = st.one_of(
    st.tuples(payloads.map(as_json), st.booleans()),
    st.tuples(payloads.map(as_msgpack), st.booleans()),
    st.tuples(st.binary(max_size=64), st.booleans()),
    st.tuples(st.text(max_size=64).map(str.encode), st.just(True)),
    st.tuples(
        st.binary(min_size=MAX_MESSAGE_BYTES + 1, max_size=MAX_MESSAGE_BYTES + 64), st.booleans()
    ),
)


# -- the server -----------------------------------------------------------------------------


@pytest.fixture
def fuzzed(redis_url: str, tmp_path: Path) -> Iterator[ServerThread]:
    """A server with a live stream s1 whose fuzzing viewer holds no coins."""
    with ServerThread(make_settings(redis_url, tmp_path, **FAULT_DEFAULTS)) as server:
        live = httpx.post(
            f"{server.url}/v1/streams",
            json={"stream_id": "s1"},
            headers=auth("streamer1", Role.STREAMER),
        )
        assert live.status_code == 201, live.text
        yield server


def expected_answers(frames_sent: list[tuple[bytes, bool]]) -> int:
    """How many frames the server must answer: all up to the first one it closes on
    (too big, or a text frame that is not UTF-8)."""
    answered = 0
    for payload, as_text in frames_sent:
        if len(payload) > MAX_MESSAGE_BYTES or (as_text and not is_utf8(payload)):
            break
        answered += 1
    return answered


def is_utf8(payload: bytes) -> bool:
    try:
        payload.decode()
    except UnicodeDecodeError:
        return False
    return True


def gift_ids(frames_sent: list[tuple[bytes, bool]], encoding: Encoding) -> Counter[str]:
    """The ids of the well-formed gifts sent, as the product's sans-I/O decoder reads
    them: each must get its own answer (`ack` or `error`) carrying that id."""
    ids: Counter[str] = Counter()
    for payload, _ in frames_sent:
        try:
            message = decode_client_message(payload, encoding)
        except ProtocolError:
            continue
        if isinstance(message, SendGift):
            ids[message.id] += 1
    return ids


@dataclass
class Exchange:
    answers: list[dict[str, Any]]  # every message but `events`, in arrival order
    closed: bool = False
    close_code: int | None = None  # None when closed: no close frame arrived


def exchange(
    server: ServerThread, encoding: Encoding, frames_sent: list[tuple[bytes, bool]]
) -> Exchange:
    """Send the frames, then a ping; read until every frame and the ping are answered
    or the server closes."""
    answers: list[dict[str, Any]] = []
    wanted = expected_answers(frames_sent) + 1
    with connect(
        ws_url(server.url, token("fuzzer")),
        subprotocols=[Subprotocol(encoding.value)],
        compression=None,
        proxy=None,
        max_size=None,
        ping_interval=None,
        open_timeout=5,
        close_timeout=2,
    ) as ws:
        try:
            for payload, text in frames_sent:
                ws.send(payload, text=text)
                if len(payload) > MAX_MESSAGE_BYTES:
                    break  # the server closes on it: nothing after it would be read
            else:
                ws.send(encode_ping(encoding), text=encoding is Encoding.JSON)
            deadline = time.monotonic() + 10
            while len(answers) < wanted:
                answers.extend(read_answers(ws, encoding, deadline))
        except ConnectionClosed as closed:
            return Exchange(answers, True, closed.rcvd.code if closed.rcvd else None)
    return Exchange(answers)


def read_answers(ws: ClientConnection, encoding: Encoding, deadline: float) -> list[dict[str, Any]]:
    data = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
    assert_no_traceback(data)
    raw = data.encode() if isinstance(data, str) else data
    message = orjson.loads(raw) if encoding is Encoding.JSON else msgpack.unpackb(raw, raw=False)
    assert isinstance(message, dict), message
    if message["type"] == "events":
        return []
    assert message["type"] in ANSWERS, message
    if message["type"] == "error":
        assert message["code"] in ERROR_CODES and isinstance(message["message"], str), message
    return [message]


def is_server_error(record: logging.LogRecord) -> bool:
    """An error the server logged (the test's own client may log its own)."""
    return record.levelno >= logging.ERROR and not record.name.startswith("websockets.client")


def encode_ping(encoding: Encoding) -> bytes:
    return as_json({"type": "ping"}) if encoding is Encoding.JSON else as_msgpack({"type": "ping"})


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(
    encoding=st.sampled_from(list(Encoding)),
    frames_sent=st.lists(frames, min_size=1, max_size=6),
)
def test_random_frames_get_an_answer_or_a_documented_close_and_change_no_money(
    fuzzed: ServerThread,
    redis_url: str,
    caplog: pytest.LogCaptureFixture,
    encoding: Encoding,
    frames_sent: list[tuple[bytes, bool]],
) -> None:
    client = sync_client(redis_url, decode_responses=True)
    try:
        before = money_state_sync(client)
        with caplog.at_level(logging.WARNING):
            result = exchange(fuzzed, encoding, frames_sent)
        answers, wanted = result.answers, expected_answers(frames_sent)
        if result.closed:
            assert wanted < len(frames_sent), "closed though every frame was fine"
            # None: the close frame was lost to a TCP reset (docs/reliability.md, known gaps)
            assert result.close_code in (*DOCUMENTED_CLOSES, None), result
        else:
            assert len(answers) == wanted + 1, (answers, frames_sent)
            assert {"type": "pong"} in answers
            answered = Counter(a["id"] for a in answers if "id" in a)
            assert gift_ids(frames_sent, encoding) <= answered, (answers, frames_sent)
        assert not [a for a in answers if a["type"] == "ack"], "a viewer without coins got an ack"
        assert money_state_sync(client) == before
        errors = [r.getMessage() for r in caplog.records if is_server_error(r)]
        assert not errors, errors
    finally:
        client.close()
